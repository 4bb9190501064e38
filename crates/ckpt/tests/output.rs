//! Output channels are part of the contract: `ckpt` run as a real process with its standard
//! output or standard error closed, or a pipe whose reader has gone, never panics and never
//! turns a failure into success; a success whose output was lost says so (exit 2); and
//! everything it prints from files comes out escaped, on standard output and in the
//! library's WARNING lines on standard error.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{ckpt, ckpt_within, text};
use model_checkpoint::store::{self, Kind, SaveOptions};
use model_checkpoint::{Dtype, HostTensor, NamedTensor};

const CKPT: &str = env!("CARGO_BIN_EXE_ckpt");

/// A checkpoint of this format holding `tensors` (name, bytes), with `info` as metadata.
fn checkpoint(path: &Path, tensors: &[(&str, &[u8])], info: &[(&str, &str)]) {
    let tensors: Vec<NamedTensor> = tensors
        .iter()
        .map(|(name, bytes)| {
            let t = HostTensor::new(Dtype::U8, vec![bytes.len()], bytes.to_vec()).expect("tensor");
            NamedTensor::new(*name, t)
        })
        .collect();
    let info: BTreeMap<String, String> = info
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    store::save(
        path,
        Kind::Weights,
        &tensors,
        &info,
        &SaveOptions::default(),
    )
    .expect("save");
}

/// How `ckpt` is run: what becomes of its standard output and standard error.
#[derive(Clone, Copy, Debug)]
enum Channel {
    /// A pipe whose reader is gone before `ckpt` writes (EPIPE).
    StdoutReaderGone,
    StderrReaderGone,
    /// The descriptor closed (`>&-`, `2>&-`), through a shell.
    StdoutClosed,
    StderrClosed,
    BothClosed,
}

/// Runs `ckpt args` in `dir` with `channel`; returns what could be read of its output.
fn run(dir: &Path, channel: Channel, args: &[&str]) -> Output {
    let shell = |redirect: &str| {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("exec \"$0\" \"$@\" {redirect}"))
            .arg(CKPT)
            .args(args);
        cmd
    };
    let mut cmd = match channel {
        Channel::StdoutClosed => shell(">&-"),
        Channel::StderrClosed => shell("2>&-"),
        Channel::BothClosed => shell(">&- 2>&-"),
        Channel::StdoutReaderGone | Channel::StderrReaderGone => {
            let mut cmd = Command::new(CKPT);
            cmd.args(args);
            cmd
        }
    };
    let mut child = cmd
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // The reader goes away before the child has written anything.
    match channel {
        Channel::StdoutReaderGone => drop(child.stdout.take()),
        Channel::StderrReaderGone => drop(child.stderr.take()),
        _ => {}
    }
    child.wait_with_output().expect("wait")
}

/// Asserts exit status `code` and no panic.
fn assert_exit(out: &Output, code: i32, what: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: {:?}, stderr {stderr:?}",
        out.status
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{what}: {stderr}"
    );
}

#[test]
fn a_failure_keeps_its_exit_status_whatever_became_of_its_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(d.join("bad.safetensors"), b"not a checkpoint").expect("write");
    checkpoint(&d.join("a.safetensors"), &[("w", &[1, 2, 3])], &[]);
    checkpoint(&d.join("b.safetensors"), &[("w", &[1, 2, 4])], &[]);
    let cases: [(&[&str], i32); 4] = [
        // verify finds a bad file; diff finds a difference: 1.
        (&["verify", "bad.safetensors"], 1),
        (
            &[
                "verify",
                "a.safetensors",
                "bad.safetensors",
                "b.safetensors",
            ],
            1,
        ),
        (&["diff", "a.safetensors", "b.safetensors"], 1),
        // An error: 2.
        (&["show", "missing.safetensors"], 2),
    ];
    for (args, code) in cases {
        for channel in [
            Channel::StdoutReaderGone,
            Channel::StderrReaderGone,
            Channel::StdoutClosed,
            Channel::StderrClosed,
            Channel::BothClosed,
        ] {
            let out = run(d, channel, args);
            assert_exit(&out, code, &format!("{args:?} with {channel:?}"));
        }
    }
    // A full disk keeps a failure's status too.
    if let Ok(full) = std::fs::File::options().write(true).open("/dev/full") {
        let out = Command::new(CKPT)
            .current_dir(d)
            .args(["verify", "bad.safetensors"])
            .stdout(full)
            .output()
            .expect("run");
        assert_exit(&out, 1, "verify >/dev/full");
    }
    // What could be written still was: the verdict of verify on the line it could write.
    let out = run(
        d,
        Channel::StderrClosed,
        &["verify", "a.safetensors", "bad.safetensors"],
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("ok      a.safetensors") && stdout.contains("BAD     bad.safetensors"),
        "{stdout}"
    );
}

#[test]
fn a_success_whose_output_was_lost_does_not_claim_success() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    checkpoint(&d.join("a.safetensors"), &[("w", &[1, 2, 3])], &[]);
    for args in [
        &["verify", "a.safetensors"][..],
        &["ls", "."],
        &["show", "a.safetensors"],
        &["diff", "a.safetensors", "a.safetensors"],
    ] {
        // Standard output closed: the output the user asked for is lost. Exit 2, and one
        // line saying so.
        let out = run(d, Channel::StdoutClosed, args);
        assert_exit(&out, 2, &format!("{args:?} >&-"));
        let stderr = text(&out.stderr);
        assert!(
            stderr.lines().count() == 1
                && stderr.contains("cannot write to standard output: it was closed"),
            "{args:?}: {stderr:?}"
        );
        // The reader went away (`ckpt ls | head -1`): it had what it wanted; quietly 0.
        let out = run(d, Channel::StdoutReaderGone, args);
        assert_exit(&out, 0, &format!("{args:?} | (gone)"));
        assert_eq!(text(&out.stderr), "", "{args:?}");
        // Standard error closed or gone: nothing was lost that the status does not say.
        for channel in [Channel::StderrClosed, Channel::StderrReaderGone] {
            let out = run(d, channel, args);
            assert_exit(&out, 0, &format!("{args:?} with {channel:?}"));
        }
        // A full disk (ENOSPC): the output is lost; exit 2, saying why.
        if let Ok(full) = std::fs::File::options().write(true).open("/dev/full") {
            let out = Command::new(CKPT)
                .current_dir(d)
                .args(args)
                .stdout(full)
                .output()
                .expect("run");
            assert_exit(&out, 2, &format!("{args:?} >/dev/full"));
            assert!(
                text(&out.stderr)
                    .contains("cannot write to standard output: No space left on device"),
                "{}",
                text(&out.stderr)
            );
        }
        // Output to /dev/null was asked for: success.
        let out = Command::new(CKPT)
            .current_dir(d)
            .args(args)
            .stdout(Stdio::null())
            .output()
            .expect("run");
        assert_exit(&out, 0, &format!("{args:?} >/dev/null"));
    }
    // Help, too, is output.
    let out = run(d, Channel::StdoutClosed, &["--help"]);
    assert_exit(&out, 2, "--help >&-");
}

/// Whether `s` holds a character that moves the cursor, rings, or breaks a line (other
/// than the line ends themselves).
fn raw_controls(s: &str) -> Vec<char> {
    s.chars()
        .filter(|&c| (c.is_control() && c != '\n' && c != '\t') || c == '\u{202e}')
        .collect()
}

#[test]
fn text_from_files_comes_out_escaped_on_every_channel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let folder = d.join("ck");
    std::fs::create_dir(&folder).expect("folder");
    // Names and values with a screen clear, a title change, a carriage return that would
    // overprint the line, a newline faking a line of output, a C1 control (CSI) and a
    // right-to-left override.
    let hostile = "w\u{1b}[2J\u{1b}]0;owned\u{7}\rok\nchecksums: ok\u{9b}31m\u{202e}";
    let name = format!("e\u{1b}[31m\r{}.safetensors", "x");
    let logs = serde_json::json!({ hostile: 0.5 }).to_string();
    checkpoint(
        &folder.join(&name),
        &[(hostile, &[1, 2, 3])],
        &[("epoch", "1"), ("monitor", hostile), ("logs", &logs)],
    );
    checkpoint(&d.join("other.safetensors"), &[(hostile, &[9, 9, 9])], &[]);
    let file = format!("ck/{name}");
    for (args, code) in [
        (vec!["show", file.as_str()], 0),
        (vec!["ls", "ck"], 0),
        (vec!["diff", file.as_str(), "other.safetensors"], 1),
        (vec!["verify", "ck"], 0),
        (vec!["best", "ck"], 0),
    ] {
        let out = ckpt(d, &args);
        assert_exit(&out, code, &format!("{args:?}"));
        let stdout = text(&out.stdout);
        assert!(raw_controls(&stdout).is_empty(), "{args:?}: {stdout:?}");
        assert!(stdout.contains("\\u{1b}"), "{args:?}: {stdout}");
        assert!(
            !stdout.lines().any(|l| l.trim() == "checksums: ok"),
            "{args:?}: a faked line: {stdout}"
        );
    }
    // JSON output stays JSON (the controls are JSON escapes) and says the same names.
    for args in [
        vec!["show", "--json", file.as_str()],
        vec!["ls", "--json", "ck"],
        vec!["best", "--json", "ck"],
    ] {
        let out = ckpt(d, &args);
        assert_exit(&out, 0, &format!("{args:?}"));
        let stdout = text(&out.stdout);
        assert!(raw_controls(&stdout).is_empty(), "{args:?}: {stdout:?}");
        let json: serde_json::Value = serde_json::from_str(&stdout).expect("valid JSON");
        let said = json.to_string();
        let quoted = serde_json::Value::from(name.clone()).to_string();
        assert!(said.contains(quoted.trim_matches('"')), "{args:?}: {said}");
    }
    let out = ckpt(d, &["show", "--json", &file]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["tensors"][0]["name"], hostile);
    assert_eq!(json["metadata"]["monitor"], hostile);
    // An error quoting a file's name: escaped too, on one line.
    let out = ckpt(d, &["show", &format!("ck/missing\u{1b}[2J\r\n{name}")]);
    assert_exit(&out, 2, "show missing");
    let stderr = text(&out.stderr);
    assert!(raw_controls(&stderr).is_empty(), "{stderr:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
}

#[test]
fn warnings_from_the_library_are_escaped() {
    // `--resume latest` skips a damaged newest checkpoint with a WARNING naming it; its
    // name holds a screen clear and a carriage return.
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let template = "ck/e{epoch:02d}\u{1b}[2J\r.safetensors";
    let train = |extra: &[&str]| {
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
        ckpt_within(d, &args, Duration::from_secs(120))
    };
    let out = train(&["--epochs", "2"]);
    assert_exit(&out, 0, "train");
    let newest = d.join("ck/e02\u{1b}[2J\r.safetensors");
    let mut bytes = std::fs::read(&newest).expect("newest");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&newest, bytes).expect("damage");
    let out = train(&["--epochs", "3", "--resume", "latest"]);
    assert_exit(&out, 0, "resume");
    let stderr = text(&out.stderr);
    let warning = stderr
        .lines()
        .find(|l| l.starts_with("WARNING: skipping"))
        .unwrap_or_else(|| panic!("no warning: {stderr:?}"));
    assert!(
        warning.contains("e02\\u{1b}[2J\\r.safetensors"),
        "{warning:?}"
    );
    assert!(raw_controls(&stderr).is_empty(), "{stderr:?}");
}
