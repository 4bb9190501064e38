//! What the command-line tests share: running `ckpt` in a folder, and reading its output.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `ckpt` with `args` in `dir`.
pub fn ckpt(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run ckpt")
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
