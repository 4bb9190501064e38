//! `ckpt ls`, `ckpt best`, `ckpt diff` on real checkpoint folders, retention flags, and
//! SIGTERM during `ckpt train`.

mod common;

use common::{ckpt, text, wait_for_file};
use std::process::{Command, Stdio};

/// Trains 5 epochs saving every epoch into ck/, with a val_loss-monitored file name.
fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ckpt(
        dir.path(),
        &[
            "train",
            "--epochs",
            "5",
            "--progress",
            "0",
            "--verbose",
            "0",
            "--filepath",
            "ck/e{epoch}.safetensors",
            "--seed",
            "4",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    dir
}

#[test]
fn ls_lists_every_checkpoint_with_its_facts() {
    let dir = folder();
    let out = ckpt(dir.path(), &["ls", "ck"]);
    assert!(out.status.success());
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 6, "header and five files: {table}");
    assert!(lines[0].starts_with("path") && lines[0].contains("verified"));
    assert!(
        lines[3].starts_with("ck/e3.safetensors")
            && lines[3].contains(" full ")
            && lines[3].contains("val_accuracy="),
        "{table}"
    );
    assert!(lines.iter().skip(1).all(|l| l.ends_with("ok")));
    // The best by the one rule `ckpt best` uses is marked, once.
    assert_eq!(
        lines.iter().filter(|l| l.contains(" (best)")).count(),
        1,
        "{table}"
    );
    let best = text(&ckpt(dir.path(), &["best", "ck"]).stdout);
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" (best)") && l.starts_with(best.trim())),
        "{best} / {table}"
    );

    // A damaged file shows as such.
    let victim = dir.path().join("ck/e2.safetensors");
    let mut bytes = std::fs::read(&victim).expect("read");
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&victim, bytes).expect("write");
    let out = ckpt(dir.path(), &["ls", "--json", "ck"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 5);
    let e2 = rows
        .iter()
        .find(|r| r["path"] == "ck/e2.safetensors")
        .expect("e2");
    assert_eq!(e2["verified"], false);
    assert!(e2["problem"]
        .as_str()
        .is_some_and(|p| p.contains("checksum mismatch")));
    let e4 = rows
        .iter()
        .find(|r| r["path"] == "ck/e4.safetensors")
        .expect("e4");
    assert_eq!(
        (
            e4["epoch"].as_i64(),
            e4["kind"].as_str(),
            e4["monitor"].as_str()
        ),
        (Some(4), Some("full"), Some("val_accuracy"))
    );
    assert!(e4["value"].is_f64() && e4["global_step"].as_u64() == Some(180));
}

#[test]
fn a_users_own_files_beside_the_checkpoints_are_left_out_and_damaged_checkpoints_are_not() {
    let dir = folder();
    let ck = dir.path().join("ck");
    // What a Keras user keeps beside the checkpoints: notes, a CSVLogger's file, a script,
    // an empty file, a report page.
    std::fs::write(ck.join("notes.txt"), "lr 1e-3 looked better\n").expect("write");
    std::fs::write(ck.join("log.csv"), "epoch,loss\r\n0,0.5\r\n").expect("write");
    std::fs::write(ck.join("train.py"), "import keras\n").expect("write");
    std::fs::write(ck.join("empty"), "").expect("write");
    std::fs::write(ck.join("page.html"), "<html></html>").expect("write");
    // Damaged checkpoints: one named as Keras 3 names weights, cut short after its header;
    // one cut short within it; one named .safetensors holding text.
    let whole = std::fs::read(ck.join("e3.safetensors")).expect("read");
    std::fs::write(ck.join("e9.weights.h5"), &whole[..whole.len() - 100]).expect("write");
    std::fs::write(ck.join("e8.weights.h5"), &whole[..200]).expect("write");
    std::fs::write(ck.join("junk.safetensors"), "not a checkpoint at all").expect("write");

    let out = ckpt(dir.path(), &["ls", "--json", "ck"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut paths: Vec<&str> = rows
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["path"].as_str())
        .collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "ck/e1.safetensors",
            "ck/e2.safetensors",
            "ck/e3.safetensors",
            "ck/e4.safetensors",
            "ck/e5.safetensors",
            "ck/e8.weights.h5",
            "ck/e9.weights.h5",
            "ck/junk.safetensors"
        ]
    );

    let out = ckpt(dir.path(), &["verify", "ck"]);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let bad: Vec<&str> = report.lines().filter(|l| l.starts_with("BAD")).collect();
    assert_eq!(bad.len(), 3, "{report}");
    assert!(bad.iter().any(|l| l.contains("e9.weights.h5")), "{report}");
    assert!(bad.iter().any(|l| l.contains("e8.weights.h5")), "{report}");
    assert!(
        bad.iter()
            .any(|l| l.contains("junk.safetensors") && l.contains("not a safetensors file")),
        "{report}"
    );
    for theirs in ["notes.txt", "log.csv", "train.py", "empty", "page.html"] {
        assert!(!report.contains(theirs), "{theirs}: {report}");
    }

    // Without the damaged ones, the folder verifies, the user's files still there.
    std::fs::remove_file(ck.join("e9.weights.h5")).expect("remove");
    std::fs::remove_file(ck.join("e8.weights.h5")).expect("remove");
    std::fs::remove_file(ck.join("junk.safetensors")).expect("remove");
    let out = ckpt(dir.path(), &["verify", "ck"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(ck.join("notes.txt").exists() && ck.join("log.csv").exists());
    let best = ckpt(dir.path(), &["best", "ck"]);
    assert!(best.status.success(), "{}", text(&best.stderr));
}

#[test]
fn best_ranks_by_the_metric_and_mode() {
    let dir = folder();
    let ls = ckpt(dir.path(), &["ls", "--json", "ck"]);
    let rows: serde_json::Value = serde_json::from_slice(&ls.stdout).expect("json");
    let rows = rows.as_array().expect("array");
    let value = |r: &serde_json::Value| r["value"].as_f64().expect("value");
    // Expected: the highest val_accuracy, the earliest on ties.
    let mut want = &rows[0];
    for r in rows {
        let better = value(r) > value(want)
            || (value(r) == value(want) && r["epoch"].as_i64() < want["epoch"].as_i64());
        if better {
            want = r;
        }
    }
    let out = ckpt(dir.path(), &["best", "ck"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        want["path"].as_str().expect("path")
    );

    // By val_loss, lower is better (auto mode from the name), and --mode max flips it.
    let loss = |path: &str| -> f64 {
        let show = ckpt(dir.path(), &["show", "--json", path]);
        let j: serde_json::Value = serde_json::from_slice(&show.stdout).expect("json");
        j["metadata"]["logs"]["val_loss"]
            .as_f64()
            .expect("val_loss")
    };
    let paths: Vec<String> = rows
        .iter()
        .map(|r| r["path"].as_str().expect("path").to_owned())
        .collect();
    let lowest = paths
        .iter()
        .min_by(|a, b| loss(a).total_cmp(&loss(b)))
        .expect("some");
    let highest = paths
        .iter()
        .max_by(|a, b| loss(a).total_cmp(&loss(b)))
        .expect("some");
    let out = ckpt(dir.path(), &["best", "ck", "--monitor", "val_loss"]);
    assert_eq!(text(&out.stdout).trim(), lowest);
    let out = ckpt(
        dir.path(),
        &["best", "ck", "--monitor", "val_loss", "--mode", "max"],
    );
    assert_eq!(text(&out.stdout).trim(), highest);
    let out = ckpt(dir.path(), &["best", "ck", "--monitor", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    let said = text(&out.stderr);
    assert!(
        said.contains("none of the 5 checkpoint(s) in ck that verify logs a value of \"nope\"")
            && said.contains("they log ")
            && said.contains("val_loss")
            && said.contains("pass one with --monitor")
            && said.lines().count() == 1,
        "{said}"
    );
    // A missing argument is named, on the one line.
    let out = ckpt(dir.path(), &["best"]);
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        said.lines().count() == 1 && said.contains("not provided") && said.contains("<DIR>"),
        "{said}"
    );
}

#[test]
fn diff_reports_changes_tensor_by_tensor() {
    let dir = folder();
    let out = ckpt(
        dir.path(),
        &["diff", "ck/e1.safetensors", "ck/e1.safetensors"],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).lines().all(|l| l.starts_with("same")));

    let out = ckpt(
        dir.path(),
        &[
            "diff",
            "--changed-only",
            "ck/e1.safetensors",
            "ck/e5.safetensors",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let report = text(&out.stdout);
    assert!(
        report.contains("changed     dense_0.weight: max abs diff"),
        "{report}"
    );
    assert!(!report.contains("same"));

    // A model with other shapes: shape changes and tensors only in one file.
    let other = tempfile::tempdir().expect("tempdir");
    let out = ckpt(
        other.path(),
        &[
            "train",
            "--epochs",
            "1",
            "--progress",
            "0",
            "--verbose",
            "0",
            "--hidden",
            "32,16",
            "--save-weights-only",
            "--filepath",
            "w.safetensors",
        ],
    );
    assert!(out.status.success());
    let theirs = other.path().join("w.safetensors");
    let out = ckpt(
        dir.path(),
        &["diff", "ck/e1.safetensors", theirs.to_str().expect("utf-8")],
    );
    let report = text(&out.stdout);
    assert!(
        report.contains("shape       dense_0.weight: [64, 64] -> [32, 64]"),
        "{report}"
    );
    assert!(report.contains("only in B   dense_2.weight"), "{report}");
    assert!(
        report.contains("only in A   __training__/optimizer/dense_0.bias/m"),
        "{report}"
    );
}

#[test]
fn best_follows_the_mode_the_run_saved_with() {
    // A run that monitored val_loss with mode max (as a Keras 3 run monitoring val_auc in
    // mode auto maximises a name tf.keras 2's rule would minimise): its files record the
    // mode, and best, ls and the report rank by it unless --mode says otherwise.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ckpt(
        dir.path(),
        &[
            "train",
            "--epochs",
            "4",
            "--progress",
            "0",
            "--verbose",
            "0",
            "--monitor",
            "val_loss",
            "--mode",
            "max",
            "--filepath",
            "ck/e{epoch}.safetensors",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let loss = |epoch: u32| -> f64 {
        let show = ckpt(
            dir.path(),
            &["show", "--json", &format!("ck/e{epoch}.safetensors")],
        );
        let j: serde_json::Value = serde_json::from_slice(&show.stdout).expect("json");
        j["metadata"]["logs"]["val_loss"]
            .as_f64()
            .expect("val_loss")
    };
    let by_loss = |pick: fn(f64, f64) -> bool| {
        let mut best = 1;
        for e in 2..=4 {
            if pick(loss(e), loss(best)) {
                best = e;
            }
        }
        format!("ck/e{best}.safetensors")
    };
    let (highest, lowest) = (by_loss(|a, b| a > b), by_loss(|a, b| a < b));
    assert_ne!(highest, lowest);
    let best = |extra: &[&str]| {
        let out = ckpt(dir.path(), &[&["best", "ck"], extra].concat());
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    };
    assert_eq!(best(&[]), highest);
    assert_eq!(best(&["--mode", "min"]), lowest);
    let ls = text(&ckpt(dir.path(), &["ls", "ck"]).stdout);
    let marked: Vec<&str> = ls.lines().filter(|l| l.contains("(best)")).collect();
    assert!(marked.len() == 1 && marked[0].starts_with(&highest), "{ls}");
    let show = text(&ckpt(dir.path(), &["show", &highest]).stdout);
    assert!(show.contains("monitor:  val_loss (mode max)"), "{show}");
}

#[test]
fn retention_flags_keep_the_best_and_the_last() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ckpt(
        dir.path(),
        &[
            "train",
            "--epochs",
            "6",
            "--progress",
            "0",
            "--verbose",
            "0",
            "--filepath",
            "ck/e{epoch}.safetensors",
            "--keep-best",
            "1",
            "--keep-last",
            "1",
            "--save-last",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let best = text(&ckpt(dir.path(), &["best", "ck"]).stdout)
        .trim()
        .to_owned();
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("ck"))
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    names.sort();
    let mut want = vec!["e6.safetensors".to_owned(), "last.safetensors".to_owned()];
    let best_name = best.trim_start_matches("ck/").to_owned();
    if !want.contains(&best_name) {
        want.push(best_name.clone());
    }
    want.sort();
    assert_eq!(names, want);
    let last = std::fs::read(dir.path().join("ck/last.safetensors")).expect("last");
    assert!(last == std::fs::read(dir.path().join("ck/e6.safetensors")).expect("e6"));
    // `last` is never the best while the save it stands for is there: with e6 and last
    // alone, e6 is.
    assert_ne!(best, "ck/last.safetensors");
    if best_name != "e6.safetensors" {
        std::fs::remove_file(dir.path().join("ck").join(&best_name)).expect("remove");
    }
    for monitor in ["val_loss", "val_accuracy"] {
        let out = ckpt(dir.path(), &["best", "ck", "--monitor", monitor]);
        assert_eq!(text(&out.stdout).trim(), "ck/e6.safetensors", "{monitor}");
    }
    let out = ckpt(dir.path(), &["ls", "ck"]);
    let table = text(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("ck/e6.safetensors") && l.contains("(best)")),
        "{table}"
    );
    // The report counts the six saves the journal records, and one file there: `last` is
    // not a save of its own.
    let out = ckpt(dir.path(), &["report", "ck", "-o", "report.html"]);
    let said = text(&out.stdout);
    assert!(
        said.contains("6 checkpoint(s) saved (1 there and verified)"),
        "{said}{}",
        text(&out.stderr)
    );
}

/// Runs `ckpt` with `args` in `dir`, sends it SIGTERM once `file` (in `dir`) exists, and
/// returns what it did.
fn terminated_once(dir: &std::path::Path, args: &[&str], file: &str) -> std::process::Output {
    let child = Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start training");
    wait_for_file(&dir.join(file), "training never saved");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    child.wait_with_output().expect("wait")
}

#[test]
fn sigterm_saves_a_resumable_checkpoint_and_resuming_completes_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = [
        "train",
        "--epochs",
        "40",
        "--progress",
        "0",
        "--verbose",
        "0",
        "--filepath",
        "ck/e{epoch:02d}.safetensors",
        "--save-on-interrupt",
        "--seed",
        "2",
    ];
    let out = terminated_once(dir.path(), &args, "ck/e02.safetensors");
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "exits with the interrupted status: {stdout} {}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains(
            "interrupted by SIGTERM: saved a full checkpoint to ck/interrupted.safetensors"
        ),
        "{stdout}"
    );
    let verify = ckpt(dir.path(), &["verify", "ck/interrupted.safetensors"]);
    assert!(
        verify.status.success() && text(&verify.stdout).contains("(full,"),
        "{}",
        text(&verify.stdout)
    );
    let show = ckpt(dir.path(), &["show", "ck/interrupted.safetensors"]);
    assert!(
        text(&show.stdout).contains("signal:   SIGTERM"),
        "the file says what it was saved on: {}",
        text(&show.stdout)
    );
    assert!(
        !dir.path().join("ck/e40.safetensors").exists(),
        "training stopped early"
    );

    let mut resume_args = args.to_vec();
    resume_args.extend(["--resume", "ck/interrupted.safetensors"]);
    // Interrupted again once resumed: the second save on a signal replaces the first, whose
    // marker goes with it.
    let newest = (1..=40)
        .rev()
        .find(|e| dir.path().join(format!("ck/e{e:02}.safetensors")).exists())
        .expect("a save");
    let again = format!("ck/e{:02}.safetensors", newest + 2);
    let out = terminated_once(dir.path(), &resume_args, &again);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let out = ckpt(dir.path(), &resume_args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("resuming from ck/interrupted.safetensors"));
    assert!(
        dir.path().join("ck/e40.safetensors").exists(),
        "the run completed"
    );
    // The completed run retired its save on the signal, and that save's marker with it:
    // one marker per checkpoint there.
    let names: Vec<String> = std::fs::read_dir(dir.path().join("ck"))
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n == "interrupted.safetensors"),
        "{names:?}"
    );
    let markers = names
        .iter()
        .filter(|n| n.starts_with(".ckpt-run.") && !n.ends_with(".csv"));
    let checkpoints = names
        .iter()
        .filter(|n| n.ends_with(".safetensors") && *n != "last.safetensors");
    assert_eq!(markers.count(), checkpoints.count(), "{names:?}");
    // The journal says so: the last save on the signal's row is followed by a `deleted`
    // row of the same number, as a retention delete is.
    let journal =
        std::fs::read_to_string(dir.path().join("ck/.ckpt-run.journal.csv")).expect("journal");
    let rows: Vec<Vec<&str>> = journal
        .lines()
        .map(|l| l.split(',').collect())
        .filter(|r: &Vec<&str>| r.get(6) == Some(&"ck/interrupted.safetensors"))
        .collect();
    let saved = rows.iter().rfind(|r| r[1] == "saved").expect("a saved row");
    let deleted = rows.last().expect("a row");
    assert_eq!(
        (deleted[1], deleted[0], deleted[2]),
        ("deleted", saved[0], saved[2]),
        "{journal}"
    );

    // And it ends where training straight through ends.
    let straight = tempfile::tempdir().expect("tempdir");
    assert!(ckpt(straight.path(), &args).status.success());
    let theirs = straight.path().join("ck/e40.safetensors");
    let diff = ckpt(
        dir.path(),
        &[
            "diff",
            "ck/e40.safetensors",
            theirs.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(diff.status.code(), Some(0), "{}", text(&diff.stdout));
}

#[test]
fn every_command_shows_an_example_in_its_help() {
    // At the end, one example per line (as a doc comment's lines they were run together
    // into one paragraph, before the usage).
    let dir = tempfile::tempdir().expect("tempdir");
    for cmd in [
        "train",
        "show",
        "verify",
        "ls",
        "best",
        "diff",
        "bench",
        "du",
        "export",
        "unlock",
        "consolidate",
        "report",
    ] {
        let out = ckpt(dir.path(), &[cmd, "--help"]);
        assert!(out.status.success(), "{cmd}");
        let help = text(&out.stdout);
        let (before, examples) = help.rsplit_once("\nExamples:\n").expect("examples");
        assert!(before.contains("Usage: "), "{cmd}: {help}");
        let lines: Vec<&str> = examples.lines().filter(|l| !l.is_empty()).collect();
        // Run together, a line would hold several commands.
        let one_each = |l: &&str| l.starts_with("  ckpt ") && l.matches(" ckpt ").count() == 1;
        assert!(
            !lines.is_empty() && lines.iter().all(one_each),
            "{cmd}: {examples}"
        );
    }
}

/// A CSV of `rows` rows of the digits' layout (64 features, then a label), made up: epochs
/// long enough for a signal to land inside the one asked for.
fn long_data(path: &std::path::Path, rows: usize) {
    let mut text = String::with_capacity(rows * 200);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for row in 0..rows {
        for _ in 0..64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            text.push_str(&format!("{},", state % 17));
        }
        text.push_str(&format!("{}\n", row % 10));
    }
    std::fs::write(path, text).expect("data");
}

#[test]
fn a_requeued_job_resumes_latest_from_its_save_on_a_signal() {
    use std::io::BufRead;
    // Signalled inside epoch 1 (before any save) and inside epoch 3 (after two): what a
    // requeued job runs, `--resume latest`, takes the save on the signal and keeps the
    // partial epoch, and the resumed run ends as one that went straight through.
    let straight = tempfile::tempdir().expect("tempdir");
    long_data(&straight.path().join("data.csv"), 30_000);
    let args = [
        "train",
        "--data",
        "data.csv",
        "--epochs",
        "3",
        "--progress",
        "1",
        "--verbose",
        "0",
        "--filepath",
        "ck/e{epoch:02d}.safetensors",
        "--save-on-interrupt",
        "--seed",
        "3",
    ];
    let done = ckpt(straight.path(), &args);
    assert!(done.status.success(), "{}", text(&done.stderr));
    for epoch in [1, 3] {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(
            straight.path().join("data.csv"),
            dir.path().join("data.csv"),
        )
        .expect("data");
        let mut child = Command::new(env!("CARGO_BIN_EXE_ckpt"))
            .current_dir(dir.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start training");
        let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let begins = format!("Epoch {epoch}/3");
        assert!(
            lines.by_ref().map_while(Result::ok).any(|l| l == begins),
            "never began epoch {epoch}"
        );
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        let out = child.wait_with_output().expect("wait");
        assert_eq!(out.status.code(), Some(3), "{rest:?} {}", text(&out.stderr));
        assert!(
            rest.iter()
                .any(|l| l.contains("saved a full checkpoint to ck/interrupted.safetensors")),
            "{rest:?}"
        );
        let mut resume = args.to_vec();
        resume.extend(["--resume", "latest"]);
        let out = ckpt(dir.path(), &resume);
        assert!(out.status.success(), "epoch {epoch}: {}", text(&out.stderr));
        let said = text(&out.stdout);
        assert!(
            said.contains("resuming from ck/interrupted.safetensors")
                && said.contains(&format!("at epoch {epoch}")),
            "epoch {epoch}: {said}"
        );
        // Completed: nothing newer than the run's final checkpoint is left for `latest`.
        assert!(!dir.path().join("ck/interrupted.safetensors").exists());
        for name in ["e01", "e02", "e03"] {
            let ours = format!("ck/{name}.safetensors");
            let theirs = straight.path().join(&ours);
            let diff = ckpt(
                dir.path(),
                &["diff", &ours, theirs.to_str().expect("utf-8")],
            );
            assert_eq!(
                diff.status.code(),
                Some(0),
                "epoch {epoch}, {name}: {}",
                text(&diff.stdout)
            );
        }
    }
}

#[test]
fn an_output_never_replaces_the_data_it_trains_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("ck")).expect("ck");
    std::os::unix::fs::symlink("ck", dir.path().join("link")).expect("link");
    let absolute = dir.path().join("ck/e01.csv");
    let absolute = absolute.to_str().expect("utf-8");
    // However the data's path is spelt: relative, absolute, through a link, as a version.
    for (data, file) in [
        ("ck/history.csv", "ck/history.csv"),
        ("ck/e01.csv", "ck/e01.csv"),
        (absolute, "ck/e01.csv"),
        ("link/e01.csv", "ck/e01.csv"),
        ("./ck/../ck/e01-v2.csv", "ck/e01-v2.csv"),
    ] {
        long_data(&dir.path().join(file), 200);
        let data_file = file;
        let before = std::fs::read(dir.path().join(data_file)).expect("data");
        let out = ckpt(
            dir.path(),
            &[
                "train",
                "--epochs",
                "1",
                "--progress",
                "0",
                "--data",
                data,
                "--filepath",
                "ck/e{epoch:02d}.csv",
            ],
        );
        assert_eq!(out.status.code(), Some(2), "{data}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("a file this run writes"),
            "{data}: {}",
            text(&out.stderr)
        );
        assert_eq!(
            std::fs::read(dir.path().join(data_file)).expect("data"),
            before
        );
    }
}

#[test]
fn a_save_on_a_signal_is_never_the_best_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ckpt(
        dir.path(),
        &[
            "train",
            "--epochs",
            "2",
            "--progress",
            "0",
            "--filepath",
            "ck/e{epoch:02d}.st",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A save on a signal holds the same logs as the epoch's save: it ties, and must not win.
    std::fs::copy(
        dir.path().join("ck/e02.st"),
        dir.path().join("ck/interrupted.safetensors"),
    )
    .expect("copy");
    let best = ckpt(dir.path(), &["best", "ck"]);
    assert_eq!(
        text(&best.stdout).trim(),
        "ck/e02.st",
        "{}",
        text(&best.stderr)
    );
}

#[test]
fn keras_messages_print_a_templates_control_characters_escaped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ckpt(
        dir.path(),
        &[
            "train",
            "--epochs",
            "1",
            "--progress",
            "0",
            "--verbose",
            "1",
            "--filepath",
            "ck/\u{1b}[31mred\nFAKE{epoch}.st",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains('\u{1b}'), "{stdout:?}");
    assert!(
        stdout.contains("saving model to ck/\\u{1b}[31mred\\nFAKE1.st"),
        "{stdout:?}"
    );
    assert!(!stdout.lines().any(|l| l.starts_with("FAKE")), "{stdout:?}");
}

#[test]
fn a_completed_resume_leaves_what_a_straight_run_leaves_and_another_keras_is_refused() {
    // A monitor never logged: best-only saves nothing, so the save on the signal is the
    // run's only checkpoint until the run completes; then the run leaves what a straight
    // run leaves (nothing), as every completed resume does.
    let dir = tempfile::tempdir().expect("tempdir");
    let args = [
        "train",
        "--epochs",
        "40",
        "--progress",
        "0",
        "--verbose",
        "0",
        "--monitor",
        "val_nothing",
        "--save-best-only",
        "--filepath",
        "ck/e{epoch:02d}.safetensors",
        "--save-on-interrupt",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .current_dir(dir.path())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start training");
    // The history's first row: an epoch has ended.
    let history = dir.path().join("ck/history.csv");
    let started = std::time::Instant::now();
    while std::fs::read_to_string(&history).map_or(0, |t| t.lines().count()) < 2 {
        assert!(started.elapsed().as_secs() < 60, "no epoch ended");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert_eq!(child.wait().expect("wait").code(), Some(3));
    let interrupted = dir.path().join("ck/interrupted.safetensors");
    assert!(interrupted.exists());

    // The same run under Keras 3: refused, naming both.
    let mut keras3 = args.to_vec();
    keras3.extend(["--resume", "latest", "--keras", "3", "--mode", "min"]);
    let out = ckpt(dir.path(), &keras3);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("imitating tf.keras 2, but this one imitates Keras 3"),
        "{}",
        text(&out.stderr)
    );

    let mut resume = args.to_vec();
    resume.extend(["--resume", "latest"]);
    let out = ckpt(dir.path(), &resume);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("no checkpoint was saved"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        !interrupted.exists(),
        "a completed run keeps no save on a signal"
    );
}

#[test]
fn unlock_of_a_local_path_says_whether_it_is_a_folder() {
    // A local folder's lock ends with its process: nothing to break (exit 0). A file or a
    // path not there is no folder (it was answered as one, exit 0).
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("ck")).expect("folder");
    std::fs::write(dir.path().join("precious.txt"), b"mine").expect("file");
    let out = ckpt(dir.path(), &["unlock", "ck"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("nothing to break"));
    for given in ["precious.txt", "missing"] {
        let out = ckpt(dir.path(), &["unlock", given]);
        assert_eq!(out.status.code(), Some(2), "{given}");
        assert!(
            text(&out.stderr).contains(&format!("{given} is not a folder")),
            "{given}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(
        std::fs::read(dir.path().join("precious.txt")).expect("read"),
        b"mine"
    );
}
