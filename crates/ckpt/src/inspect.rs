//! `ckpt show` and `ckpt verify`.

use std::path::PathBuf;

use clap::Args;

use crate::Failure;

/// Show a checkpoint's metadata and tensors.
#[derive(Args, Debug)]
pub(crate) struct ShowArgs {
    /// The checkpoint file.
    file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Verify checkpoints: structure, format version, header and tensor checksums.
#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    /// Files, or folders whose checkpoints to verify.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

pub(crate) fn show(_args: ShowArgs) -> Result<(), Failure> {
    Err("not yet".into())
}

pub(crate) fn verify(_args: VerifyArgs) -> Result<(), Failure> {
    Err(Failure::verify("not yet"))
}
