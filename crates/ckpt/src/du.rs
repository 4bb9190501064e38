//! `ckpt du`: what a folder's checkpoints take, as written (logical) and on the storage
//! (physical), and what deduplication saved.

use std::path::PathBuf;

use clap::Args;
use model_checkpoint::sharded::{blobs, list_folders};
use serde_json::json;

use crate::location::Location;
use crate::Failure;

/// Show what a folder's checkpoints take: the bytes they would take as separate files
/// (logical), the bytes the folder holds (physical: shared blobs once), and its blobs.
///
/// Checkpoints are the files in the folder and the sharded or deduplicated checkpoints one
/// level down, as `ckpt ls` lists them.
#[derive(Args, Debug)]
#[command(after_help = r#"Examples:
  ckpt du checkpoints/
  ckpt du s3://bucket/run --json"#)]
pub(crate) struct DuArgs {
    /// The folder (or s3:// prefix).
    dir: PathBuf,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) fn du(args: DuArgs) -> Result<(), Failure> {
    let folder = Location::of(&args.dir)?;
    if !folder.is_folder()? {
        return Err(format!("{} is not a folder", args.dir.display()).into());
    }
    let storage = &*folder.storage;
    // From headers and indexes alone (`ckpt verify` reads the bytes).
    let listed: Vec<_> = folder
        .listed()?
        .into_iter()
        .filter(|l| l.header.is_ok())
        .chain(list_folders(storage, &folder.name, 0)?)
        .collect();
    let checkpoints = listed.len();
    let logical = listed
        .iter()
        .map(|l| l.size)
        .fold(0u64, u64::saturating_add);
    // The blobs, and those no index names (the core's one answer, retention's too).
    let survey = blobs::survey(storage, &folder.name)?;
    let physical = survey.bytes;
    let blob_bytes = survey
        .blobs
        .iter()
        .map(|o| o.size)
        .fold(0u64, u64::saturating_add);
    let unnamed: Vec<_> = survey.unnamed().collect();
    let unnamed_bytes = unnamed
        .iter()
        .map(|o| o.size)
        .fold(0u64, u64::saturating_add);
    let ratio = if logical == 0 {
        1.0
    } else {
        physical as f64 / logical as f64
    };
    if args.json {
        out!(
            "{}",
            json!({
                "dir": folder.name.as_str(),
                "checkpoints": checkpoints,
                "logical_bytes": logical,
                "physical_bytes": physical,
                "physical_over_logical": (ratio * 1e4).round() / 1e4,
                "blobs": survey.blobs.len(),
                "blob_bytes": blob_bytes,
                "unnamed_blobs": unnamed.len(),
                "unnamed_blob_bytes": unnamed_bytes,
            })
        );
        return Ok(());
    }
    out!("{}: {checkpoints} checkpoint(s)", folder.name);
    out!("  logical   {logical} bytes (each checkpoint as if alone)");
    out!(
        "  physical  {physical} bytes ({:.1}% of logical; everything in the folder)",
        ratio * 100.0
    );
    out!("  blobs     {} ({blob_bytes} bytes)", survey.blobs.len());
    if !unnamed.is_empty() {
        out!(
            "  unnamed   {} blob(s), {unnamed_bytes} bytes: no index names them (the next save of their run collects them)",
            unnamed.len()
        );
    }
    Ok(())
}
