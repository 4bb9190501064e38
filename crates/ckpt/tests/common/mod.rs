//! What the command-line tests share: running `ckpt` in a folder, and reading its output.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `ckpt` with `args` in `dir`.
#[allow(dead_code)]
pub fn ckpt(dir: &Path, args: &[&str]) -> Output {
    ckpt_with(dir, &[], args)
}

/// Runs `ckpt` with `args` in `dir`, with `env` added to its environment.
pub fn ckpt_with(dir: &Path, env: &[(&str, String)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .args(args)
        .output()
        .expect("run ckpt")
}

/// Runs `ckpt` with a deadline: a hang is a failure, not a stuck test run.
#[allow(dead_code)]
pub fn ckpt_within(dir: &Path, args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ckpt");
    // Drained while it runs, so that a full pipe never looks like a hang.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ckpt {args:?} hung for {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout"),
        stderr: stderr.join().expect("stderr"),
    }
}

/// Output bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Waits (up to a minute) until `path` exists, as a running trainer writes it.
// Each test binary compiles this module; not every one waits for files.
#[allow(dead_code)]
pub fn wait_for_file(path: &Path, what: &str) {
    let started = std::time::Instant::now();
    while !path.exists() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Asserts that two checkpoints hold the same state: every tensor byte for byte (`ckpt diff`
/// exits 0) and the same metadata, but for what names the run that wrote them (its run id,
/// and so the header checksum).
#[allow(dead_code)]
pub fn assert_same_state(dir: &Path, a: &str, b: &str) {
    assert_same_state_with(dir, &[], a, b);
}

/// [`assert_same_state`], running `ckpt` with `env` (an S3 server's settings).
#[allow(dead_code)]
pub fn assert_same_state_with(dir: &Path, env: &[(&str, String)], a: &str, b: &str) {
    let ckpt = |dir: &Path, args: &[&str]| ckpt_with(dir, env, args);
    let diff = ckpt(dir, &["diff", a, b]);
    assert_eq!(diff.status.code(), Some(0), "{}", text(&diff.stdout));
    let show = |p: &str| -> serde_json::Value {
        let out = ckpt(dir, &["show", "--json", p]);
        let mut json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let meta = json["metadata"].as_object_mut().expect("metadata");
        meta.remove("run_id");
        meta.remove("header_checksum");
        if let Some(callbacks) = meta
            .get_mut("training_state")
            .and_then(|t| t.get_mut("callbacks"))
            .and_then(|c| c.as_object_mut())
        {
            for state in callbacks.values_mut() {
                if let Some(state) = state.as_object_mut() {
                    state.remove("run_id");
                }
            }
        }
        json.as_object_mut().expect("object").remove("path");
        json
    };
    assert_eq!(show(a), show(b), "the checkpoints' metadata differ");
}

/// Python's view of a checkpoint, shared with the adapters' interop tests.
#[path = "../../../model-checkpoint-candle/tests/python/mod.rs"]
pub mod python;

/// Whether the `ckpt` under test trains burn (the `burn` feature; the README's test command,
/// `cargo test --features ckpt/burn`, builds it). Without it, says plainly that `what` is
/// skipped; in CI (`CI` set) a skip is a failure.
#[allow(dead_code)]
pub fn has_burn(what: &str) -> bool {
    if cfg!(feature = "burn") {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{what}: ckpt is built without burn in CI (run `cargo test --features ckpt/burn`)"
    );
    println!("skipped {what}: ckpt is built without burn (cargo test --features ckpt/burn)");
    false
}

/// The frameworks a test of `what` trains with: candle, and burn where `ckpt` is built with
/// it (see [`has_burn`]).
#[allow(dead_code)]
pub fn frameworks(what: &str) -> &'static [&'static str] {
    if has_burn(&format!("the burn half of {what}")) {
        &["candle", "burn"]
    } else {
        &["candle"]
    }
}

/// `ckpt train` quietly into `ck/e{epoch:02d}.safetensors`, followed by `extra`.
#[allow(dead_code)]
pub fn train_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--progress",
        "0",
        "--verbose",
        "0",
        "--filepath",
        "ck/e{epoch:02d}.safetensors",
    ];
    args.extend_from_slice(extra);
    args
}
