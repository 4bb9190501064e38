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
