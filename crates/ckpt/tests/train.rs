//! `ckpt train` end to end: it trains and reloads the best checkpoint, repeats bit for bit,
//! and meets bad input with one clear line and a non-zero exit.

mod common;

use common::{ckpt, ckpt_with, has_burn, text, train_args};

#[test]
fn train_saves_and_reloads_the_best_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ckpt(dir.path(), &["train", "--epochs", "4", "--progress", "0"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        stdout.contains("\nEpoch 1: saving model to checkpoints/digits.01-0."),
        "{stdout}"
    );
    let saved: Vec<_> = std::fs::read_dir(dir.path().join("checkpoints"))
        .expect("folder")
        .filter(|e| {
            e.as_ref().is_ok_and(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                !name.starts_with('.') && name != "history.csv"
            })
        })
        .collect();
    assert_eq!(
        saved.len(),
        4,
        "one file per epoch (besides the hidden lock file and the history)"
    );
    assert!(dir.path().join("checkpoints/history.csv").exists());
    let best_line = stdout
        .lines()
        .find(|l| l.starts_with("best checkpoint: "))
        .expect("best line");
    let reloaded = stdout
        .lines()
        .find(|l| l.starts_with("reloaded best weights: "))
        .expect("reloaded line");
    // The reloaded weights score what the checkpoint recorded.
    let recorded = best_line
        .rsplit(' ')
        .next()
        .expect("value")
        .trim_end_matches(')');
    assert!(
        reloaded.contains(&format!("val_accuracy {recorded}")),
        "{best_line} / {reloaded}"
    );
}

#[test]
fn same_seed_and_flags_give_identical_files() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    for dir in [&a, &b] {
        let out = ckpt(
            dir.path(),
            &[
                "train",
                "--epochs",
                "3",
                "--progress",
                "0",
                "--verbose",
                "0",
                "--seed",
                "9",
                // The same run id as well: every file names its run.
                "--run-id",
                "5eed",
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let names: Vec<_> = std::fs::read_dir(a.path().join("checkpoints"))
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| n.to_string_lossy().ends_with(".safetensors"))
        .collect();
    assert_eq!(names.len(), 3);
    for name in names {
        let fa = std::fs::read(a.path().join("checkpoints").join(&name)).expect("read a");
        let fb = std::fs::read(b.path().join("checkpoints").join(&name)).expect("read b");
        assert!(fa == fb, "{name:?} differs between runs");
    }
}

#[test]
fn bad_input_ends_with_one_clear_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("bad.csv"), "1,2,3\n4,5,6\n7,oops,1\n").expect("csv");
    std::fs::write(dir.path().join("a-file"), "not a folder").expect("file");
    let cases: &[(&[&str], &str)] = &[
        (
            &["train", "--data", "missing.csv"],
            "cannot read missing.csv",
        ),
        (
            &["train", "--data", "bad.csv"],
            "bad.csv: line 3: \"oops\" is not a number",
        ),
        (&["train", "--mode", "maxx"], "unknown mode \"maxx\""),
        (
            &["train", "--save-freq", "banana"],
            "Unrecognized save_freq: banana",
        ),
        (&["train", "--epochs", "-3"], "must be at least 1, got -3"),
        (
            &["train", "--filepath", "w.{epoch.safetensors"],
            "expected '}' before end of string",
        ),
        (
            &["train", "--filepath", "w.{val_f1:.2f}.safetensors"],
            "names \"val_f1\", which is not logged",
        ),
        (
            &["train", "--filepath", "a-file/ckpt/w.safetensors"],
            "cannot create folder a-file/ckpt",
        ),
        (
            &["train", "--validation-split", "1.5"],
            "validation split must be between 0 and 1",
        ),
        (
            &["train", "--learning-rate", "-1"],
            "must be a positive, finite number",
        ),
        (&["train", "--bogus"], "unexpected argument '--bogus'"),
    ];
    for (args, expected) in cases {
        let out = ckpt(dir.path(), args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{args:?}: one line, got {stderr:?}"
        );
        assert!(stderr.starts_with("ckpt: "), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?}: {stderr:?} lacks {expected:?}"
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{args:?}: {stderr}"
        );
    }
    assert!(!dir.path().join("checkpoints").exists(), "no training ran");
}

#[test]
fn help_shows_examples_and_exit_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ckpt(dir.path(), &["train", "--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(
        help.contains("Examples:") && help.contains("ckpt train --save-best-only"),
        "{help}"
    );
    let out = ckpt(dir.path(), &["--help"]);
    assert!(text(&out.stdout).contains("Exit status: 0 success"));
    let out = ckpt(dir.path(), &["--version"]);
    assert!(text(&out.stdout).starts_with("ckpt "));
}

#[test]
fn a_read_only_checkpoint_folder_is_refused_before_training() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).expect("folder");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=64k", "tmpfs"])
        .arg(&ro)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        println!("SKIPPED: cannot mount a read-only tmpfs here (needs root)");
        return;
    }
    let out = ckpt(dir.path(), &["train", "--filepath", "ro/w.safetensors"]);
    let _ = std::process::Command::new("umount").arg(&ro).status();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot write checkpoints in ro")
            && stderr.contains("Read-only file system"),
        "{stderr}"
    );
}

#[test]
fn the_history_is_kept_beside_the_checkpoints_and_continued_on_resume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let first = ckpt(d, &train_args(&["--epochs", "3", "--hidden", "16"]));
    assert!(first.status.success(), "{}", text(&first.stderr));
    let history = d.join("ck").join("history.csv");
    let rows = || -> Vec<String> {
        std::fs::read_to_string(&history)
            .expect("history")
            .lines()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(rows()[0], "epoch,accuracy,loss,val_accuracy,val_loss");
    assert_eq!(rows().len(), 4);
    // Not a checkpoint: the listing tools pass it by.
    let ls = ckpt(d, &["ls", "ck"]);
    assert!(
        !text(&ls.stdout).contains("history.csv"),
        "{}",
        text(&ls.stdout)
    );
    let verify = ckpt(d, &["verify", "ck"]);
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stdout));
    // A resume from epoch 2 logs epochs 2, 3 and 4 once each.
    let resumed = ckpt(
        d,
        &train_args(&[
            "--epochs",
            "5",
            "--hidden",
            "16",
            "--resume",
            "ck/e02.safetensors",
        ]),
    );
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    let epochs: Vec<String> = rows()[1..]
        .iter()
        .map(|r| r.split(',').next().unwrap_or("").to_owned())
        .collect();
    assert_eq!(epochs, ["0", "1", "2", "3", "4"]);
}

/// The reloaded best weights' val_accuracy that `ckpt train` reports.
fn reloaded_accuracy(stdout: &str) -> f64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("reloaded best weights: val_accuracy "))
        .and_then(|rest| rest.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no reloaded line in {stdout}"))
}

/// Every file under `dir`: its path, size and modification time.
fn listing(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let entry = entry.expect("entry");
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                todo.push(entry.path());
            } else {
                out.push((entry.path(), meta.len(), meta.modified().expect("mtime")));
            }
        }
    }
    out.sort();
    out
}

/// A ckpt built without burn (the default build) refuses `--framework burn` by name, with
/// exit status 2, before it writes anything. Run by `.ci/run` with `cargo test --test train
/// a_ckpt_built_without_burn` (no `burn` feature).
#[cfg(not(feature = "burn"))]
#[test]
fn a_ckpt_built_without_burn_refuses_it_by_name_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ckpt(dir.path(), &train_args(&["--framework", "burn"]));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("--framework burn") && stderr.contains("--features burn"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("list").collect();
    assert!(left.is_empty(), "a refused run wrote {left:?}");
}

#[test]
fn burn_trains_the_same_mlp_to_the_same_bar_and_keeps_its_framework_on_resume() {
    if !has_burn("burn's training") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ckpt(
        dir.path(),
        &["train", "--framework", "burn", "--progress", "0"],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let accuracy = reloaded_accuracy(&stdout);
    println!("burn: reloaded best val_accuracy {accuracy}");
    assert!(accuracy >= 0.93, "{stdout}");

    // burn restores optimizer state on the device `BURN_DEVICE` names, and panics on one
    // it was built without: refused by name, with exit status 2, and nothing written
    // (ckpt trains on Flex; the library's own check is in model-checkpoint-burn's tests).
    let resume = [
        "train",
        "--framework",
        "burn",
        "--progress",
        "0",
        "--resume",
        "latest",
        "--epochs",
        "22",
    ];
    let before = listing(dir.path());
    for device in ["no-such-device", "cuda"] {
        let out = ckpt_with(dir.path(), &[("BURN_DEVICE", device.into())], &resume);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{device}: {stderr}");
        assert!(
            stderr.contains(&format!("BURN_DEVICE=\"{device}\"")) && !stderr.contains("panicked"),
            "{stderr}"
        );
        assert_eq!(listing(dir.path()), before, "{device}");
    }

    // Full checkpoints written by burn resume with burn, exactly where they stopped …
    let out = ckpt(dir.path(), &resume);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(stdout.contains(" at epoch 21"), "{stdout}");
    assert!(stdout.contains("\nEpoch 22: saving model to "), "{stdout}");

    // … and not with candle: the framework is named, with exit status 2.
    let out = ckpt(
        dir.path(),
        &[
            "train",
            "--progress",
            "0",
            "--resume",
            "latest",
            "--epochs",
            "30",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("--framework burn (now candle)"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn keras_3_behaviour_is_chosen_with_keras_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = [
        "train",
        "--keras",
        "3",
        "--epochs",
        "2",
        "--progress",
        "0",
        "--monitor",
        "val_accuracy",
        "--save-best-only",
        "--filepath",
        "k3/best.safetensors",
    ];
    let out = common::ckpt(dir.path(), &args);
    assert_eq!(out.status.code(), Some(0), "{}", common::text(&out.stderr));
    let stdout = common::text(&out.stdout);
    // Keras 3: best starts at None, the direction comes from the compiled accuracy, and
    // every save is followed by its "finished saving" line.
    assert!(
        stdout.contains("Epoch 1: val_accuracy improved from None to "),
        "{stdout}"
    );
    assert!(
        stdout.contains("Epoch 1: finished saving model to k3/best.safetensors"),
        "{stdout}"
    );

    // The same run under tf.keras 2 (the default) starts from -inf and has no such line.
    let out = common::ckpt(
        dir.path(),
        &[
            "train",
            "--epochs",
            "1",
            "--progress",
            "0",
            "--monitor",
            "val_accuracy",
            "--save-best-only",
            "--filepath",
            "k2/best.safetensors",
        ],
    );
    let stdout = common::text(&out.stdout);
    assert!(stdout.contains("improved from -inf to "), "{stdout}");
    assert!(!stdout.contains("finished saving"), "{stdout}");

    // A monitor missing from the logs: Keras 3 warns and saves anyway; tf.keras 2 skips.
    for (keras, saved) in [("3", true), ("2", false)] {
        let file = format!("missing{keras}/w.safetensors");
        let out = common::ckpt(
            dir.path(),
            &[
                "train",
                "--keras",
                keras,
                "--epochs",
                "1",
                "--progress",
                "0",
                "--monitor",
                "val_nothing",
                "--mode",
                "min",
                "--save-best-only",
                "--filepath",
                &file,
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{}", common::text(&out.stderr));
        assert!(
            common::text(&out.stderr)
                .contains("Can save best model only with val_nothing available"),
            "{}",
            common::text(&out.stderr)
        );
        assert_eq!(dir.path().join(&file).exists(), saved, "keras {keras}");
    }

    // Keras 3 cannot tell the direction of a metric it was not compiled with: its error,
    // at the first epoch's end.
    let out = common::ckpt(
        dir.path(),
        &[
            "train",
            "--keras",
            "3",
            "--epochs",
            "1",
            "--progress",
            "0",
            "--monitor",
            "val_nothing",
            "--filepath",
            "auto/w.safetensors",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        common::text(&out.stderr).contains("isn't able to automatically determine"),
        "{}",
        common::text(&out.stderr)
    );

    // Keras 3 has no period; an unknown Keras is refused by name.
    for bad in [
        &["--keras", "3", "--period", "2"][..],
        &["--keras", "4"][..],
    ] {
        let mut args = vec![
            "train",
            "--epochs",
            "1",
            "--progress",
            "0",
            "--filepath",
            "bad/w.safetensors",
        ];
        args.extend_from_slice(bad);
        let out = common::ckpt(dir.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(!dir.path().join("bad").exists());
    }
}

#[test]
fn saves_in_the_middle_of_epochs_reload_the_last_checkpoint_and_say_so() {
    // The monitor is not logged at a save every 20 batches: the report reloads the last
    // checkpoint, and says that it did (it said "best").
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ckpt(
        dir.path(),
        &[
            "train",
            "--epochs",
            "2",
            "--save-freq",
            "20",
            "--filepath",
            "ck/w.{epoch:02d}-{batch:03d}.safetensors",
            "--progress",
            "0",
            "--verbose",
            "0",
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("\nlast checkpoint: ck/w.02-"), "{stdout}");
    assert!(
        stdout.contains("\nreloaded last checkpoint's weights: val_accuracy "),
        "{stdout}"
    );
    assert!(!stdout.contains("reloaded best"), "{stdout}");
}
