//! `ckpt verify`, `ckpt show`, `--resume`, and the folder lock, on real checkpoint folders.

mod common;

use common::{assert_same_state, ckpt, frameworks, text, train_args, wait_for_file};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut f: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    f.sort();
    f
}

fn train(dir: &Path, extra: &[&str]) -> Output {
    let args = train_args(extra);
    let out = ckpt(dir, &args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    out
}

#[test]
fn verify_passes_good_files_and_fails_damaged_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    train(dir.path(), &["--epochs", "2"]);
    let out = ckpt(dir.path(), &["verify", "ck"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert_eq!(
        text(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("ok "))
            .count(),
        2
    );

    let victim = &files(&dir.path().join("ck"))[1];
    let mut bytes = std::fs::read(victim).expect("read");
    let n = bytes.len();
    bytes[n - 10] ^= 0xff;
    std::fs::write(victim, &bytes).expect("write");
    let out = ckpt(dir.path(), &["verify", "ck"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("BAD") && stdout.contains("checksum mismatch in tensor"),
        "{stdout}"
    );
    assert!(text(&out.stderr).contains("1 of 2 files did not verify"));
    // Naming the good file alone still succeeds.
    let good = files(&dir.path().join("ck"))[0].clone();
    assert_eq!(
        ckpt(dir.path(), &["verify", good.to_str().expect("utf-8")])
            .status
            .code(),
        Some(0)
    );
    // A truncated file is named as such.
    std::fs::write(victim, &bytes[..n / 2]).expect("truncate");
    let stdout = text(&ckpt(dir.path(), &["verify", victim.to_str().expect("utf-8")]).stdout);
    assert!(stdout.contains("truncated"), "{stdout}");
}

#[test]
fn show_lists_metadata_and_tensors() {
    let dir = tempfile::tempdir().expect("tempdir");
    train(dir.path(), &["--epochs", "1", "--save-weights-only"]);
    let file = files(&dir.path().join("ck"))[0].clone();
    let out = ckpt(dir.path(), &["show", file.to_str().expect("utf-8")]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("kind:     weights"), "{stdout}");
    assert!(
        stdout.contains("dense_0.weight") && stdout.contains("[64, 64]"),
        "{stdout}"
    );
    assert!(stdout.contains("checksums: ok"), "{stdout}");

    let out = ckpt(
        dir.path(),
        &["show", "--json", file.to_str().expect("utf-8")],
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["kind"], "weights");
    assert_eq!(json["verified"], true);
    assert_eq!(json["metadata"]["epoch"], "1");
    assert!(json["metadata"]["logs"]["val_accuracy"].is_number());
    let tensors = json["tensors"].as_array().expect("tensors");
    assert_eq!(tensors.len(), 4);
    assert!(tensors
        .iter()
        .all(|t| t["crc32"].as_str().is_some_and(|c| c.len() == 8)));
}

#[test]
fn resuming_latest_continues_to_the_same_result() {
    let straight = tempfile::tempdir().expect("tempdir");
    train(straight.path(), &["--epochs", "4", "--seed", "3"]);

    let resumed = tempfile::tempdir().expect("tempdir");
    train(resumed.path(), &["--epochs", "2", "--seed", "3"]);
    let out = train(
        resumed.path(),
        &["--epochs", "4", "--seed", "3", "--resume", "latest"],
    );
    assert!(
        text(&out.stdout).contains("resuming from ck/e02.safetensors at epoch 3"),
        "{}",
        text(&out.stdout)
    );
    let a = straight.path().join("ck/e04.safetensors");
    let b = resumed.path().join("ck/e04.safetensors");
    assert_same_state(
        straight.path(),
        a.to_str().expect("utf-8"),
        b.to_str().expect("utf-8"),
    );
}

#[test]
fn a_run_that_turns_deduplication_on_or_off_resumes_from_its_newest_checkpoint() {
    // Files for two epochs, a deduplicated folder for the third (`--dedup` given on a
    // requeue), a file again for the fourth (dropped): each job resumes from the newest,
    // whichever kind, and the run ends where a straight one does.
    let straight = tempfile::tempdir().expect("tempdir");
    train(straight.path(), &["--epochs", "4", "--seed", "3"]);
    let dir = tempfile::tempdir().expect("tempdir");
    train(dir.path(), &["--epochs", "2", "--seed", "3"]);
    for (epochs, extra, from) in [("3", Some("--dedup"), "e02"), ("4", None, "e03")] {
        let mut args = vec!["--epochs", epochs, "--seed", "3", "--resume", "latest"];
        args.extend(extra);
        let out = train(dir.path(), &args);
        assert!(
            text(&out.stdout).contains(&format!("resuming from ck/{from}.safetensors")),
            "{args:?}: {}",
            text(&out.stdout)
        );
    }
    assert!(dir.path().join("ck/e03.safetensors").is_dir());
    let a = straight.path().join("ck/e04.safetensors");
    let b = dir.path().join("ck/e04.safetensors");
    assert_same_state(
        straight.path(),
        a.to_str().expect("utf-8"),
        b.to_str().expect("utf-8"),
    );
    // The newest file damaged: the folder before it is taken, and the warnings name no
    // older file as the one resumed from.
    let mut bytes = std::fs::read(&b).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    std::fs::write(&b, bytes).expect("write");
    let out = train(
        dir.path(),
        &["--epochs", "5", "--seed", "3", "--resume", "latest"],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        stdout.contains("resuming from ck/e03.safetensors"),
        "{stdout}"
    );
    assert!(
        stderr.contains("skipping ck/e04.safetensors") && !stderr.contains("e02"),
        "{stderr}"
    );
}

#[test]
fn resume_falls_back_past_a_corrupt_newest_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    train(dir.path(), &["--epochs", "3"]);
    let newest = dir.path().join("ck/e03.safetensors");
    let mut bytes = std::fs::read(&newest).expect("read");
    let n = bytes.len();
    bytes[n - 5] ^= 0x10;
    std::fs::write(&newest, &bytes).expect("write");
    let out = train(dir.path(), &["--epochs", "4", "--resume", "latest"]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("skipping ck/e03.safetensors") && stderr.contains("checksum mismatch"),
        "{stderr}"
    );
    assert!(
        text(&out.stdout).contains("resuming from ck/e02.safetensors at epoch 3"),
        "{}",
        text(&out.stdout)
    );
    assert!(dir.path().join("ck/e04.safetensors").exists());
}

#[test]
fn resume_errors_are_one_clear_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: &[(&[&str], &str)] = &[
        (
            &["train", "--resume", "latest"],
            "no full checkpoint in checkpoints verifies",
        ),
        (
            &["train", "--resume", "nope.safetensors"],
            "cannot open nope.safetensors",
        ),
    ];
    std::fs::create_dir(dir.path().join("checkpoints")).expect("folder");
    for (args, expected) in cases {
        let out = ckpt(dir.path(), args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expected) && stderr.lines().count() == 1,
            "{args:?}: {stderr}"
        );
    }
    train(dir.path(), &["--epochs", "1", "--save-weights-only"]);
    let out = ckpt(dir.path(), &["train", "--resume", "ck/e01.safetensors"]);
    assert!(
        text(&out.stderr).contains("a weights-only checkpoint cannot resume training"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_second_trainer_on_the_same_folder_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = [
        "train",
        "--epochs",
        "100000",
        "--progress",
        "0",
        "--verbose",
        "0",
        "--save-best-only",
        "--filepath",
        "ck/best.safetensors",
    ];
    let mut first = Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .current_dir(dir.path())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("first trainer");
    // Wait until the first trainer has saved (and so holds the lock).
    wait_for_file(
        &dir.path().join("ck/best.safetensors"),
        "the first trainer never saved",
    );
    let second = ckpt(dir.path(), &args);
    let _ = first.kill();
    let _ = first.wait();
    let stderr = text(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("another process is writing checkpoints into ck"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn a_new_start_removes_temporary_files_left_by_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("ck")).expect("folder");
    let stale = dir.path().join("ck/.e01.safetensors.Xy12ab.ckpt-tmp");
    std::fs::write(&stale, b"half a checkpoint").expect("stale file");
    let out = train(dir.path(), &["--epochs", "1"]);
    assert!(!stale.exists(), "the stale temporary file is gone");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("removed ck/.e01.safetensors.Xy12ab.ckpt-tmp")
            || stderr.contains(".ckpt-tmp, left by an interrupted save"),
        "{stderr}"
    );
    // And it never counted as a checkpoint.
    let out = ckpt(dir.path(), &["verify", "ck"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[test]
fn export_weights_only_writes_the_model_alone_and_never_replaces_an_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    train(dir.path(), &["--epochs", "2"]);
    let full = dir.path().join("ck/e02.safetensors");
    let source =
        model_checkpoint::store::CheckpointFile::open(&full, model_checkpoint::store::Verify::Full)
            .expect("open");
    assert_eq!(source.kind(), model_checkpoint::store::Kind::Full);

    let out = ckpt(
        dir.path(),
        &["export", "ck/latest", "model.safetensors", "--weights-only"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("training tensors left out"),
        "{}",
        text(&out.stdout)
    );
    let exported = model_checkpoint::store::CheckpointFile::open(
        &dir.path().join("model.safetensors"),
        model_checkpoint::store::Verify::Full,
    )
    .expect("the export verifies");
    assert_eq!(exported.kind(), model_checkpoint::store::Kind::Weights);
    assert!(exported.training_state().expect("meta").is_none());
    // Exactly the source's weights, byte for byte, and nothing of its training.
    let weights: Vec<&str> = source
        .tensors()
        .map(|t| t.name)
        .filter(|n| !n.starts_with(model_checkpoint::store::TRAINING_PREFIX))
        .collect();
    let names: Vec<&str> = exported.tensors().map(|t| t.name).collect();
    assert_eq!(names, weights);
    assert!(weights.len() < source.tensors().count());
    for name in &weights {
        assert_eq!(
            exported.read(name).expect("read"),
            source.read(name).expect("read")
        );
    }
    if let Some(python) = common::python::python() {
        let seen = common::python::read_in_python(&python, &dir.path().join("model.safetensors"));
        assert_eq!(
            seen["tensors"].as_object().expect("tensors").len(),
            weights.len()
        );
    }

    // Exporting again replaces the earlier export; the full export keeps everything and
    // still resumes; inputs and other files are never replaced.
    let again = ckpt(
        dir.path(),
        &[
            "export",
            "ck/e02.safetensors",
            "model.safetensors",
            "--weights-only",
        ],
    );
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    let copy = ckpt(
        dir.path(),
        &["export", "ck/e02.safetensors", "copy.safetensors"],
    );
    assert_eq!(copy.status.code(), Some(0), "{}", text(&copy.stderr));
    let copied = model_checkpoint::store::CheckpointFile::open(
        &dir.path().join("copy.safetensors"),
        model_checkpoint::store::Verify::Full,
    )
    .expect("the copy verifies");
    assert_eq!(copied.kind(), model_checkpoint::store::Kind::Full);
    assert_eq!(copied.tensors().count(), source.tensors().count());

    let before = std::fs::read(&full).expect("read");
    for (from, to) in [
        ("ck/e02.safetensors", "ck/e02.safetensors"),
        ("ck/e02.safetensors", "./ck/../ck/e02.safetensors"),
        ("ck/e02.safetensors", "ck/e01.safetensors"),
    ] {
        let out = ckpt(dir.path(), &["export", from, to, "--weights-only"]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{from} -> {to}: {}",
            text(&out.stdout)
        );
        assert!(
            text(&out.stderr).contains("refusing")
                || text(&out.stderr).contains("not a file ckpt consolidate or ckpt export wrote"),
            "{}",
            text(&out.stderr)
        );
    }
    std::fs::write(dir.path().join("notes.txt"), b"mine").expect("write");
    let out = ckpt(
        dir.path(),
        &[
            "export",
            "ck/e02.safetensors",
            "notes.txt",
            "--weights-only",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        std::fs::read(dir.path().join("notes.txt")).expect("read"),
        b"mine"
    );
    assert_eq!(std::fs::read(&full).expect("read"), before);

    // A name that every command reads as "the newest in DIR", a link, a second name of
    // the source, and a folder are refused too.
    std::os::unix::fs::symlink("model.safetensors", dir.path().join("link.safetensors"))
        .expect("symlink");
    std::fs::hard_link(&full, dir.path().join("second-name.safetensors")).expect("link");
    for (from, to, says) in [
        ("ck/e02.safetensors", "ck/latest", "DIR/latest"),
        ("ck/e02.safetensors", "link.safetensors", "symbolic link"),
        (
            "ck/e02.safetensors",
            "second-name.safetensors",
            "the checkpoint it reads",
        ),
        ("ck", "out.safetensors", "is a folder"),
    ] {
        let out = ckpt(dir.path(), &["export", from, to, "--weights-only"]);
        assert_eq!(out.status.code(), Some(2), "{from} -> {to}");
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
    }
    assert!(!dir.path().join("ck/latest").exists());
    assert!(
        std::fs::symlink_metadata(dir.path().join("link.safetensors"))
            .expect("link")
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(&full).expect("read"), before);

    // A damaged source fails its checksum and leaves no output behind, even when the
    // damage is in a training tensor --weights-only leaves out.
    let mut bytes = before.clone();
    let first = source
        .tensors()
        .find(|t| t.name.starts_with(model_checkpoint::store::TRAINING_PREFIX))
        .expect("a training tensor")
        .name
        .to_owned();
    let at = find(&bytes, &source.read(&first).expect("read")).expect("its bytes");
    bytes[at] ^= 0xff;
    std::fs::write(dir.path().join("damaged-training.safetensors"), &bytes).expect("write");
    let out = ckpt(
        dir.path(),
        &[
            "export",
            "damaged-training.safetensors",
            "dt.safetensors",
            "--weights-only",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(!dir.path().join("dt.safetensors").exists());

    let mut bytes = before.clone();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    std::fs::write(&full, &bytes).expect("write");
    let out = ckpt(
        dir.path(),
        &[
            "export",
            "ck/e02.safetensors",
            "damaged.safetensors",
            "--weights-only",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("checksum"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.path().join("damaged.safetensors").exists());
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The tensors of a deduplicated checkpoint (each tensor's bytes, read through the index and
/// checked), its training state without the run id, and its index's weight map.
fn dedup_state(
    folder: &Path,
) -> (
    std::collections::BTreeMap<String, Vec<u8>>,
    serde_json::Value,
    serde_json::Value,
) {
    use model_checkpoint::sharded::ShardedCheckpoint;
    use model_checkpoint::store::{LocalFolder, Name};
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(folder.join("model.safetensors.index.json")).expect("index"),
    )
    .expect("json");
    let mut meta = index["model_checkpoint"]["metadata"].clone();
    let meta = meta.as_object_mut().expect("metadata");
    meta.remove("run_id");
    let mut state: serde_json::Value =
        serde_json::from_str(meta["training_state"].as_str().expect("state")).expect("json");
    for callback in state["callbacks"]
        .as_object_mut()
        .expect("callbacks")
        .values_mut()
    {
        if let Some(c) = callback.as_object_mut() {
            c.remove("run_id");
        }
    }
    let checkpoint =
        ShardedCheckpoint::open(&LocalFolder::default(), &Name::from(folder)).expect("opens");
    let tensors = checkpoint
        .tensors()
        .keys()
        .map(|name| {
            let t = checkpoint.read(name).expect("reads and verifies");
            (name.clone(), t.data().to_vec())
        })
        .collect();
    (tensors, state, index["weight_map"].clone())
}

#[test]
fn resuming_a_deduplicated_run_is_exact_with_candle_and_burn() {
    for &framework in frameworks("resuming a deduplicated run") {
        let flags = [
            "--dedup",
            "--keep-last",
            "2",
            "--seed",
            "5",
            "--framework",
            framework,
        ];
        let straight = tempfile::tempdir().expect("tempdir");
        train(straight.path(), &[&["--epochs", "4"][..], &flags].concat());
        let resumed = tempfile::tempdir().expect("tempdir");
        train(resumed.path(), &[&["--epochs", "2"][..], &flags].concat());
        let out = train(
            resumed.path(),
            &[&["--epochs", "4", "--resume", "latest"][..], &flags].concat(),
        );
        assert!(
            text(&out.stdout).contains("resuming from ck/e02.safetensors at epoch 3"),
            "{framework}: {}",
            text(&out.stdout)
        );
        // The weights and the optimizer's state, bit for bit.
        let (a, b) = (
            dedup_state(&straight.path().join("ck/e04.safetensors")),
            dedup_state(&resumed.path().join("ck/e04.safetensors")),
        );
        assert_eq!(a.0, b.0, "{framework}: the tensors differ");
        assert_eq!(a.1, b.1, "{framework}: the training state differs");
        // Retention kept two checkpoints in each, and every blob they name verifies.
        for dir in [straight.path(), resumed.path()] {
            let out = ckpt(dir, &["verify", "ck"]);
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
            assert_eq!(
                text(&out.stdout)
                    .lines()
                    .filter(|l| l.starts_with("ok ") && l.contains("deduplicated"))
                    .count(),
                2,
                "{}",
                text(&out.stdout)
            );
        }
        // `ckpt show --json` of a deduplicated checkpoint is JSON, as of a file.
        let show = ckpt(resumed.path(), &["show", "--json", "ck/e04.safetensors"]);
        assert_eq!(show.status.code(), Some(0), "{}", text(&show.stderr));
        let shown: serde_json::Value = serde_json::from_slice(&show.stdout).expect("json");
        assert_eq!(
            (&shown["kind"], &shown["layout"], &shown["verified"]),
            (&"full".into(), &"deduplicated".into(), &true.into()),
            "{shown}"
        );
        assert_eq!(shown["metadata"]["epoch"], "4");
        assert!(shown["metadata"]["training_state"]["fit"].is_object());
        assert_eq!(shown["tensors"].as_array().map(Vec::len), Some(a.0.len()));
        // `ckpt du` accounts for every byte.
        let du = ckpt(resumed.path(), &["du", "ck", "--json"]);
        let du: serde_json::Value = serde_json::from_slice(&du.stdout).expect("json");
        assert_eq!(du["checkpoints"], 2);
        assert_eq!(du["unnamed_blobs"], 0);
        // Exported as one plain full file, it resumes to the same end.
        let exported = tempfile::tempdir().expect("tempdir");
        let first = tempfile::tempdir().expect("tempdir");
        train(first.path(), &[&["--epochs", "2"][..], &flags].concat());
        let plain = exported.path().join("e02-plain.safetensors");
        let out = ckpt(
            first.path(),
            &[
                "export",
                "ck/e02.safetensors",
                plain.to_str().expect("utf-8"),
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        train(
            exported.path(),
            &[
                &["--epochs", "4", "--resume", plain.to_str().expect("utf-8")][..],
                &flags,
            ]
            .concat(),
        );
        let c = dedup_state(&exported.path().join("ck/e04.safetensors"));
        assert_eq!(
            a.0, c.0,
            "{framework}: resumed from the export, the tensors differ"
        );
    }
}

#[test]
fn resuming_a_compressed_run_is_exact_with_candle_and_burn() {
    for &framework in frameworks("resuming a compressed run") {
        let flags = ["--dedup", "--seed", "5", "--framework", framework];
        // Straight and plain, against stopped and resumed with every blob compressed.
        let straight = tempfile::tempdir().expect("tempdir");
        train(straight.path(), &[&["--epochs", "3"][..], &flags].concat());
        let resumed = tempfile::tempdir().expect("tempdir");
        let packed = [&flags[..], &["--compress"]].concat();
        train(resumed.path(), &[&["--epochs", "2"][..], &packed].concat());
        let out = train(
            resumed.path(),
            &[&["--epochs", "3", "--resume", "latest"][..], &packed].concat(),
        );
        assert!(
            text(&out.stdout).contains("resuming from ck/e02.safetensors at epoch 3"),
            "{framework}: {}",
            text(&out.stdout)
        );
        // The decoded tensors, bit for bit.
        let (a, b) = (
            dedup_state(&straight.path().join("ck/e03.safetensors")),
            dedup_state(&resumed.path().join("ck/e03.safetensors")),
        );
        assert_eq!(a.0, b.0, "{framework}: the tensors differ");
        assert_eq!(a.1, b.1, "{framework}: the training state differs");
        // And they were stored compressed.
        let folder = resumed.path().join("ck/e03.safetensors");
        let compressed = b.2["dense_0.weight"].as_str().map(|blob| {
            let bytes = std::fs::read(folder.join(blob)).expect("blob");
            find(&bytes, b"zstd-byte-planes").is_some()
        });
        assert_eq!(compressed, Some(true), "{framework}: {:?}", b.2);
        let out = ckpt(resumed.path(), &["verify", "ck"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
        // `ckpt diff` of folders: the straight plain run and the resumed compressed one are
        // the same tensor by tensor; two epochs differ; a folder against a plain file of it.
        let path = |dir: &Path, name: &str| dir.join(name).to_string_lossy().into_owned();
        let same = ckpt(
            resumed.path(),
            &[
                "diff",
                &path(straight.path(), "ck/e03.safetensors"),
                "ck/e03.safetensors",
            ],
        );
        assert_eq!(same.status.code(), Some(0), "{}", text(&same.stdout));
        assert!(
            text(&same.stdout).lines().all(|l| l.starts_with("same ")),
            "{}",
            text(&same.stdout)
        );
        let changed = ckpt(
            resumed.path(),
            &[
                "diff",
                "--changed-only",
                "ck/e02.safetensors",
                "ck/e03.safetensors",
            ],
        );
        assert_eq!(changed.status.code(), Some(1), "{}", text(&changed.stderr));
        assert!(
            text(&changed.stdout).contains("changed     dense_0.weight: max abs diff"),
            "{}",
            text(&changed.stdout)
        );
        let out = ckpt(
            resumed.path(),
            &["export", "ck/e03.safetensors", "whole.safetensors"],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        // `DIR/latest` names the newest full checkpoint, a folder one too.
        let out = ckpt(
            resumed.path(),
            &["export", "ck/latest", "latest.safetensors"],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let against_file = ckpt(resumed.path(), &["diff", "ck/latest", "whole.safetensors"]);
        assert_eq!(
            against_file.status.code(),
            Some(0),
            "{}",
            text(&against_file.stdout)
        );
        let against_file = ckpt(
            resumed.path(),
            &["diff", "ck/e03.safetensors", "latest.safetensors"],
        );
        assert_eq!(
            against_file.status.code(),
            Some(0),
            "{}",
            text(&against_file.stdout)
        );
    }
}

#[test]
fn a_damaged_deduplicated_checkpoint_is_named_when_it_is_passed_over() {
    // `FOLDER/latest` skips a deduplicated checkpoint whose blob is damaged; the warning
    // names the checkpoint passed over (the blob's name alone says nothing of which).
    let dir = tempfile::tempdir().expect("tempdir");
    train(dir.path(), &["--epochs", "3", "--dedup"]);
    let blob = blobs_of(&dir.path().join("ck/e03.safetensors"))
        .into_iter()
        .next()
        .expect("a blob");
    let mut bytes = std::fs::read(&blob).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    std::fs::write(&blob, bytes).expect("write");
    let out = train(
        dir.path(),
        &["--epochs", "4", "--dedup", "--resume", "ck/latest"],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        stdout.contains("resuming from ck/e02.safetensors"),
        "{stdout}"
    );
    assert!(
        stderr.contains("skipping ck/e03.safetensors: ") && stderr.contains("checksum mismatch"),
        "{stderr}"
    );
}

/// The blobs a deduplicated checkpoint's index names, as paths, each once.
fn blobs_of(folder: &Path) -> Vec<PathBuf> {
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(folder.join("model.safetensors.index.json")).expect("index"),
    )
    .expect("json");
    let mut blobs: Vec<PathBuf> = index["weight_map"]
        .as_object()
        .expect("weight_map")
        .values()
        .filter_map(|f| f.as_str())
        .map(|f| folder.join(f))
        .collect();
    blobs.sort();
    blobs.dedup();
    blobs
}

#[cfg(unix)]
#[test]
fn a_blob_name_that_leads_nowhere_is_a_checkpoint_that_does_not_verify_not_a_read_error() {
    // A blob that is a link looping on itself, or whose folder is a file, is as missing
    // as a deleted one: `ckpt verify` says BAD and exits 1 (it said ERROR, exit 2, as for
    // a disk that failed to read a file that is there).
    let dir = tempfile::tempdir().expect("tempdir");
    train(dir.path(), &["--epochs", "3", "--dedup"]);
    let older = blobs_of(&dir.path().join("ck/e02.safetensors"));
    let blob = blobs_of(&dir.path().join("ck/e03.safetensors"))
        .into_iter()
        .find(|b| !older.contains(b))
        .expect("a blob of e03's own");
    std::fs::remove_file(&blob).expect("remove");
    std::os::unix::fs::symlink(&blob, &blob).expect("a link to itself");
    let verify = |what: &str| {
        let out = ckpt(dir.path(), &["verify", what]);
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{what}: {stdout}{}",
            text(&out.stderr)
        );
        assert!(
            stdout.contains("BAD     ") && !stdout.contains("ERROR"),
            "{what}: {stdout}"
        );
    };
    verify("ck/e03.safetensors");
    // The blob folder replaced by a file: every blob's path goes through a file.
    let blobs = blob.parent().expect("blob folder").to_path_buf();
    std::fs::rename(&blobs, dir.path().join("moved")).expect("move the blobs");
    std::fs::write(&blobs, b"not a folder").expect("a file in its place");
    verify("ck/e02.safetensors");
}

#[test]
fn consolidate_names_what_it_was_given_and_what_it_read() {
    // A folder without an index, or a checkpoint file, is said to be no sharded or
    // deduplicated checkpoint (it was "cannot read …/model.safetensors.index.json"); a
    // deduplicated one is called so, not "1 shards".
    let dir = tempfile::tempdir().expect("tempdir");
    train(dir.path(), &["--epochs", "2"]);
    for given in ["ck", "ck/e02.safetensors", "missing"] {
        let out = ckpt(dir.path(), &["consolidate", given, "out.safetensors"]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{given}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "{given} is not a sharded or deduplicated checkpoint"
            )),
            "{given}: {stderr}"
        );
        assert!(!dir.path().join("out.safetensors").exists());
    }
    train(
        dir.path(),
        &["--epochs", "3", "--dedup", "--resume", "latest"],
    );
    let out = ckpt(
        dir.path(),
        &["consolidate", "ck/e03.safetensors", "out.safetensors"],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains("from a deduplicated checkpoint") && !stdout.contains("shards"),
        "{stdout}"
    );
}
