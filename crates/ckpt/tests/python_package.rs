//! The Python package's own tests (pytest, `crates/model-checkpoint-python/tests`), run
//! from `cargo test` so that the README's test command is the whole suite: real Keras 3
//! (JAX on the CPU) and tf.keras 2 beside our callback, exact resume, files shared with
//! this `ckpt`, S3 on a SeaweedFS server the tests start.
//!
//! It needs the package installed into `$CKPT_PYTHON`'s environment (`.ci/run` builds the
//! wheel with maturin and installs it; by hand: `pip install maturin && maturin develop -m
//! crates/model-checkpoint-python/Cargo.toml` in a virtual environment) with pytest, keras,
//! jax and tf-keras. Without them it says so and skips, except in CI.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_python_package_passes_its_tests() {
    let python = std::env::var("CKPT_PYTHON").unwrap_or_else(|_| "python3".into());
    let ready = Command::new(&python)
        .args([
            "-c",
            "import model_checkpoint._native, pytest, keras, jax, tf_keras",
        ])
        .output();
    if !ready.as_ref().is_ok_and(|o| o.status.success()) {
        let why = ready
            .map(|o| {
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
                    .to_owned()
            })
            .unwrap_or_else(|e| e.to_string());
        assert!(
            std::env::var_os("CI").is_none(),
            "{python} cannot run the Python package's tests in CI ({why}); .ci/run installs them"
        );
        println!(
            "SKIPPED the Python package's tests: {python} lacks the package or pytest, keras, jax, tf-keras ({why}); see crates/model-checkpoint-python/README.md"
        );
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(&python)
        .args(["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"])
        .arg(root.join("crates/model-checkpoint-python/tests"))
        .env("CKPT_BIN", env!("CARGO_BIN_EXE_ckpt"))
        .env("KERAS_BACKEND", "jax")
        .env("JAX_PLATFORMS", "cpu")
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .current_dir(&root)
        .output()
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "pytest failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // In CI nothing skips: every tool a test needs was installed.
    assert!(
        std::env::var_os("CI").is_none() || !stdout.contains("skipped"),
        "a Python test skipped in CI:\n{stdout}"
    );
}
