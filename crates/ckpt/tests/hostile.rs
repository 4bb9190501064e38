//! `ckpt` against hostile input, one test per class of defect (see docs/HOSTILE-INPUT.md):
//! every case runs the real binary, and checks the exit status, the one-line message, and
//! what is left on disk. No case may panic, abort, hang or delete what it should not.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{ckpt, ckpt_within, text, train_args};
use model_checkpoint::store::{self, CheckpointFile, Kind, SaveOptions, Verify};
use model_checkpoint::{Dtype, HostTensor, NamedTensor};

/// Asserts a refusal: exit status 2, one line on stderr containing `expected`.
fn assert_refused(out: &Output, args: &[&str], expected: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr:?}");
    assert!(
        stderr.len() < 1000,
        "{args:?}: an oversized line: {stderr:?}"
    );
    assert!(
        stderr.contains(expected),
        "{args:?}: {stderr:?} lacks {expected:?}"
    );
}

fn train(dir: &Path, extra: &[&str]) -> Output {
    ckpt_within(dir, &train_args(extra), Duration::from_secs(120))
}

fn train_ok(dir: &Path, extra: &[&str]) -> Output {
    let out = train(dir, extra);
    assert!(out.status.success(), "{extra:?}: {}", text(&out.stderr));
    out
}

/// Rewrites a checkpoint as an attacker would: same tensors, changed metadata, and fresh,
/// valid checksums (a CRC authenticates nothing).
fn forge(path: &Path, edit: impl FnOnce(&mut BTreeMap<String, String>)) {
    let file = CheckpointFile::open(path, Verify::Full).expect("open");
    let kind = file.kind();
    let tensors: Vec<(String, HostTensor)> = file
        .tensors()
        .map(|t| {
            let data = file.read(t.name).expect("read");
            (
                t.name.to_owned(),
                HostTensor::new(t.dtype, t.shape.to_vec(), data).expect("tensor"),
            )
        })
        .collect();
    let mut info = file.info().clone();
    for key in [
        "format",
        "format_version",
        "kind",
        "checksum_algorithm",
        "tensor_checksums",
        "header_checksum",
    ] {
        info.remove(key);
    }
    edit(&mut info);
    drop(file);
    let named: Vec<NamedTensor<'_>> = tensors
        .iter()
        .map(|(n, t)| NamedTensor::new(n.clone(), t.clone()))
        .collect();
    store::save(path, kind, &named, &info, &SaveOptions::default()).expect("forge");
}

/// Rewrites a checkpoint's header text as an attacker would, with a fresh, valid header
/// checksum: for what this tool's writer refuses to write (metadata it cannot read back).
fn forge_header_text(path: &Path, edit: impl FnOnce(&mut String)) {
    let bytes = std::fs::read(path).expect("read");
    let len = u64::from_le_bytes(bytes[..8].try_into().expect("length")) as usize;
    let mut header = String::from_utf8(bytes[8..8 + len].to_vec()).expect("utf-8");
    edit(&mut header);
    let key = "\"header_checksum\":\"";
    let at = header.find(key).expect("a header checksum") + key.len();
    header.replace_range(at..at + 8, "00000000");
    let sum = crc32fast::hash(header.as_bytes());
    header.replace_range(at..at + 8, &format!("{sum:08x}"));
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&bytes[8 + len..]);
    std::fs::write(path, out).expect("write");
}

/// Edits the state of the ModelCheckpoint callback inside a full checkpoint's training state.
fn forge_callback_state(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    forge(path, |info| {
        let mut state: serde_json::Value =
            serde_json::from_str(&info["training_state"]).expect("state");
        let callbacks = state["callbacks"].as_object_mut().expect("callbacks");
        let key = callbacks
            .keys()
            .find(|k| k.starts_with("ModelCheckpoint("))
            .expect("callback")
            .clone();
        edit(&mut callbacks[&key]);
        info.insert("training_state".into(), state.to_string());
    });
}

#[test]
fn untrusted_paths_never_direct_a_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A file elsewhere, and one in the folder that another run wrote under a name this run's
    // template produces.
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "precious").expect("victim");
    let other = tempfile::tempdir().expect("other run");
    train_ok(other.path(), &["--epochs", "1"]);
    train_ok(dir.path(), &["--epochs", "2", "--keep-last", "1"]);
    std::fs::copy(
        other.path().join("ck/e01.safetensors"),
        dir.path().join("ck/e01.safetensors"),
    )
    .expect("plant another run's file");
    let latest = dir.path().join("ck/e02.safetensors");
    forge_callback_state(&latest, |state| {
        let kept = state["kept"].as_array_mut().expect("kept");
        for path in [
            victim.to_str().expect("utf-8"),
            "ck/e01.safetensors",
            "../x",
        ] {
            kept.push(serde_json::json!({"path": path, "epoch": 0, "value": 0.0, "seq": 0}));
        }
    });
    let out = train_ok(
        dir.path(),
        &["--epochs", "4", "--keep-last", "1", "--resume", "latest"],
    );
    assert_eq!(
        std::fs::read_to_string(&victim).expect("the victim survives"),
        "precious"
    );
    assert!(
        dir.path().join("ck/e01.safetensors").exists(),
        "another run's file survives"
    );
    assert!(text(&out.stderr).contains("could not have written"));
    // The forged checkpoint cannot be confirmed as the run's (no marker in the folder names
    // its header), so the resumed run is a new run: it keeps what came before, and deletes
    // only what it saved itself.
    assert!(text(&out.stderr).contains("cannot confirm that run"));
    assert!(dir.path().join("ck/e02.safetensors").exists());
    assert!(!dir.path().join("ck/e03.safetensors").exists());
    assert!(dir.path().join("ck/e04.safetensors").exists());

    // A forged checkpoint that names another run in the same folder, and lists its files:
    // it cannot act as that run.
    let shared = tempfile::tempdir().expect("tempdir");
    let template = "ck/w{epoch:02d}-{val_loss:.4f}.safetensors";
    let run = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--progress",
            "0",
            "--verbose",
            "0",
            "--filepath",
            template,
        ];
        args.extend_from_slice(extra);
        let out = ckpt_within(shared.path(), &args, Duration::from_secs(120));
        assert!(out.status.success(), "{extra:?}: {}", text(&out.stderr));
        out
    };
    run(&["--epochs", "3", "--run-id", "aaaa"]);
    let victims: Vec<PathBuf> = std::fs::read_dir(shared.path().join("ck"))
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    assert_eq!(victims.len(), 3);
    std::fs::remove_file(shared.path().join("ck/.ckpt.lock")).ok();
    run(&["--epochs", "2", "--run-id", "bbbb", "--seed", "7"]);
    let forged = std::fs::read_dir(shared.path().join("ck"))
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            !victims.contains(p)
                && p.extension().is_some_and(|e| e == "safetensors")
                && p.to_string_lossy().contains("w02")
        })
        .expect("run b's epoch 2");
    forge(&forged, |info| {
        let mut state: serde_json::Value =
            serde_json::from_str(&info["training_state"]).expect("state");
        let callbacks = state["callbacks"].as_object_mut().expect("callbacks");
        let key = callbacks
            .keys()
            .find(|k| k.starts_with("ModelCheckpoint("))
            .expect("cb")
            .clone();
        callbacks[&key]["run_id"] = serde_json::json!("aaaa");
        let kept: Vec<_> = victims
            .iter()
            .map(|v| {
                let name = format!("ck/{}", v.file_name().expect("name").to_string_lossy());
                serde_json::json!({"path": name, "epoch": 1, "value": 0.0, "seq": 0})
            })
            .collect();
        callbacks[&key]["kept"] = serde_json::json!(kept);
        info.insert("run_id".into(), "aaaa".into());
        info.insert("training_state".into(), state.to_string());
    });
    let forged_name = format!("ck/{}", forged.file_name().expect("name").to_string_lossy());
    let out = run(&[
        "--epochs",
        "4",
        "--seed",
        "7",
        "--keep-last",
        "1",
        "--resume",
        &forged_name,
    ]);
    for v in &victims {
        assert!(
            v.exists(),
            "run a's {} was deleted: {}",
            v.display(),
            text(&out.stderr)
        );
    }

    // Counters from a file are range-checked, never wrapped: in the fit state, in the
    // callback's state, and in the metadata a listing reads.
    let huge = dir.path().join("ck/e04.safetensors");
    let pristine = std::fs::read(&huge).expect("read");
    let resume = || {
        let args = [
            "train",
            "--epochs",
            "9",
            "--progress",
            "0",
            "--filepath",
            "ck/e{epoch:02d}.safetensors",
            "--resume",
            "ck/e04.safetensors",
        ];
        ckpt_within(dir.path(), &args, Duration::from_secs(60))
    };
    forge(&huge, |info| {
        let mut state: serde_json::Value =
            serde_json::from_str(&info["training_state"]).expect("state");
        state["fit"]["epoch"] = serde_json::json!(u64::MAX);
        info.insert("training_state".into(), state.to_string());
    });
    assert_refused(
        &resume(),
        &["resume"],
        "epoch 18446744073709551615 is out of range",
    );
    std::fs::write(&huge, &pristine).expect("restore");
    // Batches done in an epoch, past the epoch's batches: the epoch would go unseen.
    forge(&huge, |info| {
        let mut state: serde_json::Value =
            serde_json::from_str(&info["training_state"]).expect("state");
        state["fit"]["epoch_complete"] = serde_json::json!(false);
        state["fit"]["batches_done"] = serde_json::json!(1_000_000_000_000_000u64);
        info.insert("training_state".into(), state.to_string());
    });
    // Refused when training would start, after the warning that the forged file's run
    // cannot be confirmed.
    let out = resume();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.lines().last().is_some_and(|l| l.contains(
            "saved after batch 1000000000000000 of epoch 4, but an epoch of this data has 45 batches"
        )),
        "{stderr}"
    );
    std::fs::write(&huge, &pristine).expect("restore");
    forge_callback_state(&huge, |state| state["seq"] = serde_json::json!(u64::MAX));
    assert_refused(&resume(), &["resume"], "counter seq is out of range");
    std::fs::write(&huge, &pristine).expect("restore");
    // This tool's writer refuses such metadata: written by hand.
    let epoch = CheckpointFile::open(&huge, Verify::HeaderOnly)
        .expect("open")
        .info()["epoch"]
        .clone();
    forge_header_text(&huge, |header| {
        let was = format!("\"epoch\":\"{epoch}\"");
        assert!(header.contains(&was), "{header}");
        *header = header.replace(&was, &format!("\"epoch\":\"{}\"", u64::MAX));
    });
    let ls = ckpt(dir.path(), &["ls", "ck"]);
    assert!(
        text(&ls.stdout).contains("not a whole number"),
        "{}",
        text(&ls.stdout)
    );
}

#[test]
fn a_resumed_run_with_retention_reports_a_file_that_exists() {
    let dir = tempfile::tempdir().expect("tempdir");
    train_ok(dir.path(), &["--epochs", "2", "--keep-last", "1"]);
    let out = train_ok(
        dir.path(),
        &["--epochs", "4", "--keep-last", "1", "--resume", "latest"],
    );
    // An honest resume is confirmed as the same run: its file from before the resume goes.
    assert!(!dir.path().join("ck/e02.safetensors").exists());
    assert!(
        !text(&out.stderr).contains("cannot confirm"),
        "{}",
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    let best = stdout
        .lines()
        .find_map(|l| l.strip_prefix("best checkpoint: "))
        .expect("a best checkpoint");
    let path = best.split(" (").next().expect("path");
    assert!(dir.path().join(path).exists(), "{stdout}");
    // `ckpt best` names an existing file too.
    let out = ckpt(dir.path(), &["best", "ck"]);
    let named = text(&out.stdout);
    assert!(dir.path().join(named.trim()).exists(), "{named}");
    // And a save-best-only run with keep-last 1.
    let two = tempfile::tempdir().expect("tempdir");
    train_ok(
        two.path(),
        &["--epochs", "2", "--keep-last", "1", "--save-best-only"],
    );
    let out = train_ok(
        two.path(),
        &[
            "--epochs",
            "3",
            "--keep-last",
            "1",
            "--save-best-only",
            "--resume",
            "latest",
        ],
    );
    assert!(text(&out.stdout).contains("reloaded best weights"));
}

#[test]
fn bounded_sizes_are_errors_not_aborts() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("big-label.csv"), "1,2,0\n3,4,1000000000\n").expect("csv");
    std::fs::write(dir.path().join("long-line.csv"), "1,".repeat(9 << 20)).expect("csv");
    let long_name = format!("ck/{}.safetensors", "a".repeat(300));
    let deep = vec!["1"; 300].join(",");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--filepath", "w{val_loss:.2000000f}"],
            "more than 1048576 characters",
        ),
        (
            vec!["--filepath", "w{epoch:99999999999}"],
            "more than 1048576 characters",
        ),
        (
            // Formatted (as Python would), then refused as a name no file system takes.
            vec!["--filepath", "w{epoch:4097}"],
            "more than the 4096 a path may have",
        ),
        (
            vec!["--filepath", &long_name],
            "more than the 255 a file name may have",
        ),
        (vec!["--hidden", "1000000000000"], "parameters"),
        (vec!["--hidden", "100000,100000"], "parameters"),
        (
            vec!["--data", "big-label.csv"],
            "label 1000000000 is too large",
        ),
        (
            vec!["--data", "long-line.csv"],
            "longer than 16777216 bytes",
        ),
        (vec!["--every-seconds", "1e308"], "a duration holds"),
        (vec!["--hidden", &deep], "deeper than the 256"),
    ];
    for (args, expected) in &cases {
        let mut all = vec!["train", "--epochs", "1", "--progress", "0"];
        all.extend(args);
        let out = ckpt_within(dir.path(), &all, Duration::from_secs(60));
        assert_refused(&out, &all, expected);
    }
    assert!(
        !dir.path().join("ck").exists()
            || std::fs::read_dir(dir.path().join("ck"))
                .expect("ls")
                .count()
                <= 1
    );
    // A header length beyond the limit, and one beyond the file.
    for (name, header_len) in [("huge.safetensors", u64::MAX), ("past.safetensors", 4096)] {
        let mut bytes = header_len.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}      ");
        std::fs::write(dir.path().join(name), &bytes).expect("write");
        let out = ckpt_within(dir.path(), &["show", name], Duration::from_secs(30));
        assert_refused(&out, &["show", name], name);
    }
}

#[cfg(unix)]
#[test]
fn non_regular_files_are_refused_without_blocking() {
    let dir = tempfile::tempdir().expect("tempdir");
    train_ok(dir.path(), &["--epochs", "1"]);
    let fifo = dir.path().join("pipe.safetensors");
    let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(status.success());
    let limit = Duration::from_secs(30);
    for args in [
        vec!["show", "pipe.safetensors"],
        vec!["diff", "pipe.safetensors", "ck/e01.safetensors"],
        vec![
            "train",
            "--epochs",
            "2",
            "--progress",
            "0",
            "--filepath",
            "ck/e{epoch:02d}.safetensors",
            "--resume",
            "pipe.safetensors",
        ],
        vec![
            "train",
            "--epochs",
            "1",
            "--progress",
            "0",
            "--data",
            "pipe.safetensors",
        ],
        vec!["show", "/dev/zero"],
    ] {
        let out = ckpt_within(dir.path(), &args, limit);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("not a regular file"), "{args:?}: {stderr}");
    }
    // A FIFO planted as the folder's lock file, and a folder given as data.
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).expect("folder");
    let status = Command::new("mkfifo")
        .arg(locked.join(".ckpt.lock"))
        .status()
        .expect("mkfifo");
    assert!(status.success());
    for args in [
        vec![
            "train",
            "--epochs",
            "1",
            "--progress",
            "0",
            "--filepath",
            "locked/w{epoch}.safetensors",
        ],
        vec![
            "train",
            "--epochs",
            "1",
            "--progress",
            "0",
            "--data",
            "locked",
        ],
    ] {
        let out = ckpt_within(dir.path(), &args, limit);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(
            text(&out.stderr).lines().count(),
            1,
            "{}",
            text(&out.stderr)
        );
    }
    // A FIFO or a device where a checkpoint is to be written is refused, never replaced;
    // a link planted as the lock file creates nothing where it points.
    let dest = dir.path().join("dest");
    std::fs::create_dir(&dest).expect("folder");
    assert!(Command::new("mkfifo")
        .arg(dest.join("fifo"))
        .status()
        .expect("mkfifo")
        .success());
    let device = Command::new("mknod")
        .args([dest.join("null").to_str().expect("utf-8"), "c", "1", "3"])
        .status()
        .is_ok_and(|s| s.success());
    let mut targets = vec!["dest/fifo"];
    if device {
        targets.push("dest/null");
    } else {
        println!("mknod is not permitted here: the device case is skipped, the FIFO case runs");
    }
    for target in targets {
        let args = [
            "train",
            "--epochs",
            "1",
            "--progress",
            "0",
            "--filepath",
            target,
        ];
        let out = ckpt_within(dir.path(), &args, limit);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{target}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("not a regular file"),
            "{}",
            text(&out.stderr)
        );
        let kind = std::fs::symlink_metadata(dir.path().join(target)).expect("still there");
        assert!(!kind.is_file(), "{target} was replaced by a regular file");
    }
    let linked = dir.path().join("linked");
    std::fs::create_dir_all(linked.join("ck")).expect("folder");
    std::os::unix::fs::symlink(linked.join("created"), linked.join("ck/.ckpt.lock"))
        .expect("symlink");
    let args = [
        "train",
        "--epochs",
        "1",
        "--progress",
        "0",
        "--filepath",
        "linked/ck/w{epoch}.st",
    ];
    let out = ckpt_within(dir.path(), &args, limit);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        !linked.join("created").exists(),
        "the lock followed a link out of the folder"
    );

    let out = ckpt_within(dir.path(), &["verify", "pipe.safetensors"], limit);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("not a regular file"));
    // A FIFO inside a checkpoint folder is not a checkpoint: listing and `latest` pass it.
    std::fs::rename(&fifo, dir.path().join("ck/e09.safetensors")).expect("move fifo");
    let out = ckpt_within(dir.path(), &["ls", "ck"], limit);
    assert_eq!(out.status.code(), Some(0));
    assert!(!text(&out.stdout).contains("e09"));
}

/// A file big enough that reading it takes a while, of this format.
fn big_checkpoint(path: &Path, mib: usize) {
    let data = vec![0x3fu8; mib << 20];
    let t = HostTensor::new(Dtype::U8, vec![data.len()], data).expect("tensor");
    store::save(
        path,
        Kind::Weights,
        &[NamedTensor::new("w", t)],
        &BTreeMap::new(),
        &SaveOptions::default(),
    )
    .expect("save");
}

#[test]
fn concurrent_truncation_is_an_error_never_sigbus() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Within one process: the file shrinks, or is rewritten in place, after it was opened.
    let path = dir.path().join("w.safetensors");
    big_checkpoint(&path, 4);
    let file = CheckpointFile::open(&path, Verify::Full).expect("open");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(1000))
        .expect("truncate");
    let err = file.read("w").expect_err("truncated");
    assert!(
        err.to_string().contains("truncated while being read"),
        "{err}"
    );
    big_checkpoint(&path, 4);
    let file = CheckpointFile::open(&path, Verify::HeaderOnly).expect("open");
    let mut bytes = std::fs::read(&path).expect("read");
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&path, &bytes).expect("rewrite in place");
    let err = file.read("w").expect_err("rewritten");
    assert!(err.to_string().contains("checksum mismatch"), "{err}");

    // Across processes: `ckpt verify` and `ckpt diff` while another process truncates.
    for round in 0..6 {
        let victim = dir.path().join(format!("v{round}.safetensors"));
        big_checkpoint(&victim, 96);
        let args: Vec<&str> = if round % 2 == 0 {
            vec!["verify", victim.to_str().expect("utf-8")]
        } else {
            vec![
                "diff",
                victim.to_str().expect("utf-8"),
                victim.to_str().expect("utf-8"),
            ]
        };
        let child = Command::new(env!("CARGO_BIN_EXE_ckpt"))
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(5 * round));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&victim)
            .and_then(|f| f.set_len(64))
            .expect("truncate");
        let out = child.wait_with_output().expect("wait");
        // Either it finished before the truncation, or it says what happened; a signal
        // (SIGBUS) would leave no exit code.
        let code = out.status.code();
        assert!(
            matches!(code, Some(0..=2)),
            "{args:?}: {:?} {}",
            out.status,
            text(&out.stderr)
        );
    }
}

#[test]
fn resume_options_are_restored_honoured_or_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    train_ok(dir.path(), &["--epochs", "2", "--learning-rate", "0.002"]);
    let resume = |extra: &[&str]| {
        let mut args = vec!["--resume", "latest"];
        args.extend_from_slice(extra);
        train(dir.path(), &args)
    };
    for (extra, expected) in [
        // As the flags are written (they were Rust's debug forms: `[64]`, `Maximize`,
        // `Some(0.2)`, `None`).
        (
            vec!["--epochs", "3", "--hidden", "32"],
            "--hidden 64 (now 32)",
        ),
        (vec!["--epochs", "3", "--monitor", "val_loss"], "--monitor"),
        (
            vec!["--epochs", "3", "--mode", "min"],
            "--mode max (now min)",
        ),
        (
            vec!["--epochs", "3", "--initial-value-threshold", "0.3"],
            "--initial-value-threshold none (now 0.3)",
        ),
        (vec!["--epochs", "3", "--seed", "5"], "seed 0 (now 5)"),
        (
            vec!["--epochs", "3", "--batch-size", "16"],
            "batch size 32 (now 16)",
        ),
        (
            vec!["--epochs", "3", "--validation-split", "0.3"],
            "validation split 0.2 (now 0.3)",
        ),
        (vec!["--epochs", "3", "--no-shuffle-rows"], "row shuffling"),
        (
            vec!["--epochs", "2"],
            "already finished epoch 2 of --epochs 2",
        ),
    ] {
        let out = resume(&extra);
        assert_refused(&out, &extra, expected);
        // Refused before saying where training would continue.
        assert!(
            !text(&out.stdout).contains("resuming from"),
            "{extra:?}: {}",
            text(&out.stdout)
        );
    }
    // Restored: the checkpoint's learning rate, when none is given.
    let out = resume(&["--epochs", "3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lr = |name: &str| -> f64 {
        let out = ckpt(dir.path(), &["show", "--json", name]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        json["metadata"]["training_state"]["optimizer"]["lr"]
            .as_f64()
            .expect("lr")
    };
    assert_eq!(lr("ck/e03.safetensors"), 0.002);
    // Honoured, said, and saved: a new learning rate.
    let out = resume(&["--epochs", "4", "--learning-rate", "0.0005"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("learning rate: 0.0005 from now on"));
    assert_eq!(lr("ck/e04.safetensors"), 0.0005);
}

/// The first lowercase hex letter of the stored header checksum, upper-cased: one bit.
fn upcase_header_checksum(path: &Path) -> bool {
    let mut bytes = std::fs::read(path).expect("read");
    let key = b"\"header_checksum\":\"";
    let at = bytes
        .windows(key.len())
        .position(|w| w == key)
        .expect("header checksum")
        + key.len();
    let Some(i) = (at..at + 8).find(|&i| bytes[i].is_ascii_lowercase()) else {
        return false;
    };
    bytes[i] ^= 0x20;
    std::fs::write(path, &bytes).expect("write");
    true
}

#[test]
fn canonical_checksum_any_other_spelling_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    train_ok(dir.path(), &["--epochs", "6"]);
    let mut changed = 0;
    for epoch in 1..=6 {
        let path = dir.path().join(format!("ck/e{epoch:02}.safetensors"));
        if upcase_header_checksum(&path) {
            changed += 1;
            let out = ckpt(dir.path(), &["verify", path.to_str().expect("utf-8")]);
            assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
            assert!(text(&out.stdout).contains("header checksum mismatch"));
        }
    }
    assert!(
        changed >= 2,
        "six checksums without a hex letter is a 1-in-10^7 event"
    );
    // A tensor checksum spelled in upper case, with the header checksum recomputed so that
    // only the spelling is wrong, fails too.
    let other = tempfile::tempdir().expect("tempdir");
    train_ok(other.path(), &["--epochs", "3"]);
    let mut tested = 0;
    for epoch in 1..=3 {
        let path = other.path().join(format!("ck/e{epoch:02}.safetensors"));
        let mut bytes = std::fs::read(&path).expect("read");
        let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8")) as usize;
        let header = 8..8 + header_len;
        let key = b"\"tensor_checksums\":\"";
        let start = bytes[header.clone()]
            .windows(key.len())
            .position(|w| w == key)
            .expect("tensor checksums")
            + 8
            + key.len();
        // The first checksum value: after the first `\":\"` inside the escaped JSON.
        let value = bytes[start..]
            .windows(4)
            .position(|w| w == b"\":\\\"")
            .expect("a value")
            + start
            + 4;
        let Some(i) = (value..value + 8).find(|&i| bytes[i].is_ascii_lowercase()) else {
            continue;
        };
        bytes[i] ^= 0x20;
        reseal_header(&mut bytes, header);
        std::fs::write(&path, &bytes).expect("write");
        let out = ckpt(other.path(), &["verify", path.to_str().expect("utf-8")]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
        assert!(
            text(&out.stdout).contains("is not 8 lowercase hex digits"),
            "{}",
            text(&out.stdout)
        );
        tested += 1;
    }
    assert!(
        tested >= 1,
        "three checksums without a hex letter is a 1-in-10^4 event"
    );
}

/// Recomputes the header checksum after an edit, as an attacker can.
fn reseal_header(bytes: &mut [u8], header: std::ops::Range<usize>) {
    let key = b"\"header_checksum\":\"";
    let at = bytes[header.clone()]
        .windows(key.len())
        .position(|w| w == key)
        .expect("header checksum")
        + header.start
        + key.len();
    bytes[at..at + 8].copy_from_slice(b"00000000");
    let sum = crc32fast::hash(&bytes[header]);
    bytes[at..at + 8].copy_from_slice(format!("{sum:08x}").as_bytes());
}

#[test]
fn reserved_names_are_refused_before_training() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (args, expected) in [
        (
            vec!["--filepath", "ck/.ckpt.lock"],
            "the folder's lock file",
        ),
        (
            vec!["--filepath", "ck/.w{epoch}.ckpt-tmp"],
            "temporary files",
        ),
        (vec!["--filepath", "ck/w.ckpt-tmp"], "temporary files"),
        (
            vec!["--filepath", "ck/last.safetensors", "--save-last"],
            "save_last",
        ),
        (vec!["--filepath", "ck/history.csv"], "the training history"),
        (vec!["--filepath", ""], "--filepath is empty"),
    ] {
        let mut all = vec!["train", "--epochs", "1", "--progress", "0"];
        all.extend(&args);
        let out = ckpt_within(dir.path(), &all, Duration::from_secs(60));
        assert_refused(&out, &all, expected);
    }
    assert!(
        !dir.path().join("ck/.ckpt.lock").is_file()
            || std::fs::read_dir(dir.path().join("ck"))
                .expect("ls")
                .count()
                <= 1
    );
}

#[test]
fn bad_object_storage_urls_are_refused_before_any_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // No server anywhere: each is refused before a request is made (a request would hang
    // or fail otherwise, and the deadline would catch it).
    let limit = Duration::from_secs(30);
    for (args, expected) in [
        (
            vec!["ls", "s3://B!/x"],
            "its bucket name is missing or malformed",
        ),
        (
            vec!["verify", "s3:///x"],
            "its bucket name is missing or malformed",
        ),
        (vec!["ls", "s3://b/../x"], "it leaves the bucket"),
        (
            vec!["show", "s3://b/../../etc/passwd"],
            "it leaves the bucket",
        ),
    ] {
        assert_refused(&ckpt_within(d, &args, limit), &args, expected);
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_ckpt"));
    let out = child
        .current_dir(d)
        .env("AWS_ALLOW_HTTP", "maybe")
        .args(["ls", "s3://bucket/x"])
        .output()
        .expect("run");
    assert_refused(&out, &["ls"], "the client cannot be configured");
}

#[test]
fn ordering_is_by_content_not_modification_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    train_ok(dir.path(), &["--epochs", "3"]);
    // Touch the oldest checkpoint into the future, and the newest into the past.
    let set = |name: &str, t: std::time::SystemTime| {
        std::fs::File::options()
            .write(true)
            .open(dir.path().join(name))
            .and_then(|f| f.set_modified(t))
            .expect("touch");
    };
    let now = std::time::SystemTime::now();
    set("ck/e01.safetensors", now + Duration::from_secs(3600));
    set("ck/e03.safetensors", now - Duration::from_secs(3600));
    let out = ckpt(dir.path(), &["ls", "ck"]);
    let listing = text(&out.stdout);
    let order: Vec<usize> = ["e01", "e02", "e03"]
        .iter()
        .map(|n| listing.find(n).expect("listed"))
        .collect();
    assert!(order[0] < order[1] && order[1] < order[2], "{listing}");
    let out = train_ok(dir.path(), &["--epochs", "4", "--resume", "latest"]);
    assert!(
        text(&out.stdout).contains("resuming from ck/e03.safetensors at epoch 4"),
        "{}",
        text(&out.stdout)
    );
    // Renaming does not reorder either: the epoch inside decides.
    std::fs::rename(
        dir.path().join("ck/e01.safetensors"),
        dir.path().join("ck/zz.safetensors"),
    )
    .expect("rename");
    let out = ckpt(dir.path(), &["ls", "ck"]);
    let listing = text(&out.stdout);
    assert!(
        listing.find("zz").expect("zz") < listing.find("e02").expect("e02"),
        "{listing}"
    );
}

/// A safetensors file as other tools write it: a JSON header and raw little-endian bytes.
fn foreign_file(path: &Path, format: Option<&str>) {
    let values: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let mut header = serde_json::json!({
        "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
    });
    if let Some(format) = format {
        header["__metadata__"] = serde_json::json!({ "format": format });
    }
    let mut text = header.to_string();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(text.as_bytes());
    bytes.extend_from_slice(&values);
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn foreign_safetensors_files_load_unverified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files: Vec<PathBuf> = Vec::new();
    for format in [Some("pt"), Some("np"), Some("tf"), Some("flax"), None] {
        let path = dir
            .path()
            .join(format!("{}.safetensors", format.unwrap_or("none")));
        foreign_file(&path, format);
        files.push(path);
    }
    if let Some(python) = common::python::python() {
        for format in ["pt", "np"] {
            let path = dir.path().join(format!("py-{format}.safetensors"));
            let script = format!(
                "import numpy as np, sys\nfrom safetensors.numpy import save_file\nsave_file({{'w': np.arange(4, dtype=np.float32).reshape(2, 2)}}, sys.argv[1], metadata={{'format': '{format}'}})"
            );
            let status = Command::new(&python)
                .args(["-c", &script, path.to_str().expect("utf-8")])
                .status()
                .expect("python");
            assert!(status.success());
            files.push(path);
        }
    }
    for path in &files {
        let name = path.to_str().expect("utf-8");
        let out = ckpt(dir.path(), &["show", name]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("none (not written by model-checkpoint)"));
        let out = ckpt(dir.path(), &["verify", name]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stdout).contains("NO SUMS"),
            "{}",
            text(&out.stdout)
        );
        let file = CheckpointFile::open(path, Verify::Full).expect("opens");
        assert!(!file.has_checksums());
        assert_eq!(file.read("w").expect("reads").len(), 16);
    }
    // A file of this format whose `format` field was damaged is held to its checksums.
    train_ok(dir.path(), &["--epochs", "1"]);
    let ours = dir.path().join("ck/e01.safetensors");
    let mut bytes = std::fs::read(&ours).expect("read");
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8")) as usize;
    let from = b"\"format\":\"model-checkpoint\"";
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("format");
    bytes[at..at + from.len()].copy_from_slice(b"\"format\":\"pt\"              ");
    // Even with a header checksum that matches the altered header.
    reseal_header(&mut bytes, 8..8 + header_len);
    std::fs::write(&ours, &bytes).expect("write");
    let out = ckpt(dir.path(), &["verify", "ck/e01.safetensors"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("format is \"pt\", expected \"model-checkpoint\""),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn outputs_are_bounded_one_line_and_printable() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A tensor name of 70,000 characters, and one with terminal escapes and a newline.
    for (file, name) in [
        ("long.safetensors", "a".repeat(70_000)),
        ("escape.safetensors", "w\u{1b}[2J\nchecksums: ok".to_owned()),
    ] {
        let mut header = serde_json::Map::new();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}),
        );
        let mut text_header = serde_json::Value::Object(header).to_string();
        while !text_header.len().is_multiple_of(8) {
            text_header.push(' ');
        }
        let mut bytes = (text_header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(text_header.as_bytes());
        bytes.push(7);
        std::fs::write(dir.path().join(file), bytes).expect("write");
        for args in [vec!["show", file], vec!["diff", file, file]] {
            let out = ckpt_within(dir.path(), &args, Duration::from_secs(30));
            assert!(
                out.status.code().is_some_and(|c| c <= 2),
                "{args:?}: {:?}",
                out.status
            );
            let stdout = text(&out.stdout);
            assert!(
                !stdout.contains('\u{1b}'),
                "{args:?}: raw escape in {stdout:?}"
            );
            assert!(!stdout.lines().any(|l| l == "checksums: ok"), "{stdout}");
            assert!(stdout.lines().all(|l| l.chars().count() < 400), "{args:?}");
        }
    }
    // Error lines: one line, bounded, whatever the path holds.
    let long = "a/".repeat(2000) + "x";
    for args in [
        vec!["show", "no\nsuch\nfile"],
        vec!["show", long.as_str()],
        vec!["ls", long.as_str()],
        vec!["train", "--data", "no\nsuch.csv"],
        vec![],
    ] {
        let out = ckpt_within(dir.path(), &args, Duration::from_secs(30));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr:?}");
        assert!(stderr.len() < 600, "{args:?}: {} bytes", stderr.len());
    }
    // A refused resume leaves no folder behind.
    let out = ckpt_within(
        dir.path(),
        &[
            "train",
            "--progress",
            "0",
            "--resume",
            "latest",
            "--filepath",
            "a/b/c/w{epoch}.st",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        !dir.path().join("a").exists(),
        "a refused resume made folders"
    );
}

/// Starts a long `ckpt train` in `dir`, waits for `first` to appear, and returns the child.
fn start_training(dir: &Path, args: &[&str], first: &str) -> std::process::Child {
    let child = Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start training");
    common::wait_for_file(&dir.join(first), "training never saved");
    child
}

fn stop(mut child: std::process::Child, signal: &str) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    child.wait().expect("wait")
}

#[test]
fn managed_names_never_replace_what_the_run_did_not_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("ck")).expect("folder");
    // A user's file where `last` would go: refused, untouched.
    foreign_file(&dir.path().join("ck/last.safetensors"), Some("pt"));
    let before = std::fs::read(dir.path().join("ck/last.safetensors")).expect("read");
    let out = train(dir.path(), &["--epochs", "1", "--save-last"]);
    assert_refused(
        &out,
        &["--save-last"],
        "refusing to delete or replace ck/last.safetensors: it is not a checkpoint this tool wrote",
    );
    assert_eq!(
        std::fs::read(dir.path().join("ck/last.safetensors")).expect("read"),
        before
    );
    // A template whose names may (but need not) be `last` is fine with --save-last.
    let other = tempfile::tempdir().expect("tempdir");
    let out = ckpt_within(
        other.path(),
        &[
            "train",
            "--epochs",
            "2",
            "--progress",
            "0",
            "--verbose",
            "0",
            "--save-last",
            "--filepath",
            "ck/{epoch:02d}.safetensors",
        ],
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(other.path().join("ck/last.safetensors").exists());

    // A user's interrupted.safetensors is not overwritten by an interrupt save: the run
    // saves under a name of its own.
    let third = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(third.path().join("ck")).expect("folder");
    std::fs::write(third.path().join("ck/interrupted.safetensors"), "precious").expect("write");
    let child = start_training(
        third.path(),
        &[
            "train",
            "--epochs",
            "400",
            "--progress",
            "0",
            "--verbose",
            "0",
            "--filepath",
            "ck/e{epoch:03d}.safetensors",
            "--save-on-interrupt",
        ],
        "ck/e002.safetensors",
    );
    let status = stop(child, "-TERM");
    assert_eq!(status.code(), Some(3));
    assert_eq!(
        std::fs::read_to_string(third.path().join("ck/interrupted.safetensors")).expect("kept"),
        "precious"
    );
    let own = std::fs::read_dir(third.path().join("ck"))
        .expect("ls")
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("interrupted-"));
    assert!(own, "the interrupt save went under the run's own name");
}

/// Replaces `path` with a symbolic link to `target` (relative to `path`'s folder).
#[cfg(unix)]
fn link(target: &str, path: &Path) {
    let _ = std::fs::remove_file(path);
    std::os::unix::fs::symlink(target, path).expect("symlink");
}

#[cfg(unix)]
fn is_link(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

#[cfg(unix)]
#[test]
fn links_and_foreign_files_under_the_tools_names_are_kept() {
    // A user's own file at the history's name (the tool's choice of name beside the
    // checkpoints, not the user's): refused before training, untouched.
    let dir = tempfile::tempdir().expect("tempdir");
    let ck = dir.path().join("ck");
    std::fs::create_dir(&ck).expect("folder");
    std::fs::write(ck.join("history.csv"), "my,own,csv\n1,2,3\n").expect("write");
    let args = ["--epochs", "1"];
    assert_refused(
        &train(dir.path(), &args),
        &args,
        "refusing to delete or replace ck/history.csv: it is not a history",
    );
    assert_eq!(
        std::fs::read_to_string(ck.join("history.csv")).expect("kept"),
        "my,own,csv\n1,2,3\n"
    );
    // A link there, even to a history, is not replaced by a file.
    std::fs::write(dir.path().join("theirs.csv"), "epoch,loss\r\n").expect("write");
    link("../theirs.csv", &ck.join("history.csv"));
    assert_refused(
        &train(dir.path(), &args),
        &args,
        "ck/history.csv: it is a symbolic link",
    );
    assert!(is_link(&ck.join("history.csv")));
    std::fs::remove_file(ck.join("history.csv")).expect("rm");

    // A run's own history is replaced by the next run, as before.
    train_ok(dir.path(), &["--epochs", "3", "--keep-last", "2"]);
    train_ok(dir.path(), &["--epochs", "3", "--keep-last", "2"]);

    // A file retention tracks, moved elsewhere by the user and linked back: retention
    // keeps the link (the tool writes files; a link is the user's).
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("folder");
    std::fs::rename(
        ck.join("e02.safetensors"),
        elsewhere.join("mine.safetensors"),
    )
    .expect("move");
    link("../elsewhere/mine.safetensors", &ck.join("e02.safetensors"));
    // A link at the save on a signal's name, to a copy of a run's checkpoint, which a
    // completed run would otherwise retire.
    std::fs::copy(
        ck.join("e03.safetensors"),
        elsewhere.join("copy.safetensors"),
    )
    .expect("cp");
    link(
        "../elsewhere/copy.safetensors",
        &ck.join("interrupted.safetensors"),
    );
    train_ok(
        dir.path(),
        &["--epochs", "5", "--keep-last", "2", "--resume", "latest"],
    );
    assert!(
        is_link(&ck.join("e02.safetensors")),
        "retention kept the link"
    );
    assert!(is_link(&ck.join("interrupted.safetensors")));
    assert!(elsewhere.join("mine.safetensors").is_file());
    assert!(!ck.join("e03.safetensors").exists(), "retention went on");

    // `last` as a link to one of the run's checkpoints: refused before training.
    link("e05.safetensors", &ck.join("last.safetensors"));
    let args = ["--epochs", "6", "--save-last", "--resume", "latest"];
    assert_refused(
        &train(dir.path(), &args),
        &args,
        "ck/last.safetensors: it is a symbolic link",
    );
    assert!(is_link(&ck.join("last.safetensors")));
}

#[test]
fn show_json_is_json_whatever_the_metadata_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    train_ok(dir.path(), &["--epochs", "1"]);
    let file = dir.path().join("ck/e01.safetensors");
    // Pretty-printed JSON (line breaks between its tokens), nesting past what a parser
    // follows, and an array of 5 MB (whose tree would take thirty times that).
    let big = format!("[{}0]", "0,".repeat(2_500_000));
    forge(&file, |info| {
        info.insert("config".into(), "{\r\n  \"a\": [\n    1\n  ]\n}".into());
        info.insert(
            "deep".into(),
            format!("{}{}", "[".repeat(200), "]".repeat(200)),
        );
        info.insert("big".into(), big.clone());
    });
    let out = ckpt_within(
        dir.path(),
        &["show", "--json", "ck/e01.safetensors"],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let metadata = &shown["metadata"];
    assert_eq!(metadata["config"], serde_json::json!({"a": [1]}));
    assert!(
        metadata["deep"].is_string(),
        "too deep for a tree: its text"
    );
    assert_eq!(
        metadata["big"].as_str(),
        Some(big.as_str()),
        "too large for a tree"
    );
    assert!(metadata["training_state"].is_object());
}

/// `ckpt` as a user for whom `dir`'s sub-folder `locked` cannot be listed: as root (whom
/// permissions do not stop), with the capabilities that override them dropped, `locked`
/// being another user's; as anyone else, `locked` with no permissions at all. `None` where
/// root has no `setpriv` to drop them with.
#[cfg(unix)]
fn ckpt_barred_from(dir: &Path, locked: &Path, args: &[&str]) -> Option<Output> {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let mut command = if root {
        std::os::unix::fs::chown(locked, Some(65534), Some(65534)).expect("chown");
        std::fs::set_permissions(locked, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let mut command = Command::new("setpriv");
        command
            .args(["--bounding-set", "-dac_override,-dac_read_search", "--"])
            .arg(env!("CARGO_BIN_EXE_ckpt"));
        command
    } else {
        std::fs::set_permissions(locked, std::fs::Permissions::from_mode(0o000)).expect("chmod");
        Command::new(env!("CARGO_BIN_EXE_ckpt"))
    };
    let out = command.current_dir(dir).args(args).output();
    let _ = std::fs::set_permissions(locked, std::fs::Permissions::from_mode(0o700));
    match out {
        Ok(out) => Some(out),
        Err(e) if root && e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("run ckpt: {e}"),
    }
}

#[cfg(unix)]
#[test]
fn a_sub_folder_that_cannot_be_listed_is_passed_over() {
    // A volume mounted at the checkpoint folder has a `lost+found` only root may list.
    let dir = tempfile::tempdir().expect("tempdir");
    train_ok(dir.path(), &["--epochs", "2"]);
    let locked = dir.path().join("ck/lost+found");
    std::fs::create_dir(&locked).expect("folder");
    let args = train_args(&["--epochs", "3", "--resume", "ck/latest"]);
    let Some(out) = ckpt_barred_from(dir.path(), &locked, &args) else {
        eprintln!("SKIPPED: running as root without setpriv (util-linux) to drop permissions");
        assert!(std::env::var_os("CI").is_none(), "setpriv is missing in CI");
        return;
    };
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("passing over ck/lost+found: it cannot be listed"),
        "{stderr}"
    );
    assert!(
        text(&out.stdout).contains("resuming from ck/e02.safetensors"),
        "{}",
        text(&out.stdout)
    );
    assert!(dir.path().join("ck/e03.safetensors").is_file());
}

#[cfg(unix)]
#[test]
fn a_newest_folder_checkpoint_that_cannot_be_read_stops_latest() {
    // Deduplicated checkpoints only (folders), the newest one's index unreadable: it may
    // be the newest, so `latest` is an error naming it, not an older one or nothing (a
    // requeued job would silently train again what it holds).
    let dir = tempfile::tempdir().expect("tempdir");
    train_ok(dir.path(), &["--epochs", "2", "--dedup"]);
    let index = dir
        .path()
        .join("ck/e02.safetensors/model.safetensors.index.json");
    let args = train_args(&["--epochs", "3", "--dedup", "--resume", "ck/latest"]);
    let Some(out) = ckpt_barred_from(dir.path(), &index, &args) else {
        eprintln!("SKIPPED: running as root without setpriv (util-linux) to drop permissions");
        assert!(std::env::var_os("CI").is_none(), "setpriv is missing in CI");
        return;
    };
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("ck/e02.safetensors/model.safetensors.index.json")
            && stderr.contains("ermission denied"),
        "{stderr}"
    );
}

#[test]
fn nested_folders_lock_resume_and_clean_like_flat_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A trainer whose template has a field in a folder name locks the folder above; a
    // second trainer in one of its sub-folders is refused, and removes nothing of it.
    let child = start_training(
        dir.path(),
        &[
            "train",
            "--epochs",
            "400",
            "--progress",
            "0",
            "--verbose",
            "0",
            "--filepath",
            "ck/{epoch}/w.safetensors",
        ],
        "ck/1/w.safetensors",
    );
    let out = ckpt_within(
        dir.path(),
        &[
            "train",
            "--epochs",
            "1",
            "--progress",
            "0",
            "--filepath",
            "ck/1/x{epoch}.safetensors",
        ],
        Duration::from_secs(60),
    );
    let status = stop(child, "-KILL");
    assert!(!status.success());
    assert_refused(
        &out,
        &["nested"],
        "another process is writing checkpoints into",
    );

    // Resume latest finds checkpoints in sub-folders.
    let nested = tempfile::tempdir().expect("tempdir");
    let args = ["--filepath", "ck/{epoch}/w.safetensors"];
    let run = |extra: &[&str]| {
        let mut all = vec!["train", "--progress", "0", "--verbose", "0"];
        all.extend_from_slice(&args);
        all.extend_from_slice(extra);
        ckpt_within(nested.path(), &all, Duration::from_secs(120))
    };
    assert!(run(&["--epochs", "2"]).status.success());
    let out = run(&["--epochs", "3", "--resume", "latest"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("resuming from ck/2/w.safetensors at epoch 3"));

    // A template that climbs with `..` still has its retention and its report.
    let climb = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(climb.path().join("work")).expect("folder");
    let out = ckpt_within(
        &climb.path().join("work"),
        &[
            "train",
            "--epochs",
            "4",
            "--progress",
            "0",
            "--verbose",
            "0",
            "--keep-last",
            "1",
            "--filepath",
            "../ck/w{epoch}.safetensors",
        ],
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let kept: Vec<String> = std::fs::read_dir(climb.path().join("ck"))
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    assert!(kept.len() <= 2, "retention ran: {kept:?}");
    assert!(
        text(&out.stdout).contains("reloaded best weights"),
        "{}",
        text(&out.stdout)
    );
    // Markers do not pile up when one name is saved again and again.
    let again = tempfile::tempdir().expect("tempdir");
    let out = ckpt_within(
        again.path(),
        &[
            "train",
            "--epochs",
            "3",
            "--progress",
            "0",
            "--verbose",
            "0",
            "--filepath",
            "ck/w.safetensors",
        ],
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let markers = std::fs::read_dir(again.path().join("ck"))
        .expect("ls")
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            // The run's journal shares the markers' prefix; it is not one.
            name.starts_with(".ckpt-run.") && name != model_checkpoint::store::JOURNAL_FILE
        })
        .count();
    assert_eq!(markers, 1);
}
