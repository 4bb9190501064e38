//! `ckpt`: train with Keras-style checkpoints, and list, inspect and verify checkpoints.

use std::process::ExitCode;

use clap::Parser;

/// Train with Keras-style checkpoints, and inspect and verify checkpoint files.
#[derive(Parser, Debug)]
#[command(name = "ckpt", version, about)]
struct Cli {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    ExitCode::SUCCESS
}
