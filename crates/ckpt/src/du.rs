//! `ckpt du`: what a folder's checkpoints take, as written (logical) and on the storage
//! (physical), and what deduplication saved.

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::Args;
use model_checkpoint::sharded::{blobs, list_folders, read_index, INDEX_FILE};
use model_checkpoint::store::Name;
use serde_json::json;

use crate::location::Location;
use crate::Failure;

/// Show what a folder's checkpoints take: the bytes they would take as separate files
/// (logical), the bytes the folder holds (physical: shared blobs once), and its blobs.
///
/// Checkpoints are the files in the folder and the sharded or deduplicated checkpoints one
/// level down, as `ckpt ls` lists them.
///
/// Examples:
///   ckpt du checkpoints/
///   ckpt du s3://bucket/run --json
#[derive(Args, Debug)]
pub(crate) struct DuArgs {
    /// The folder (or s3:// prefix).
    dir: PathBuf,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// How deep `du` looks for objects below the folder.
const DEPTH: usize = 16;

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
    let objects = storage.list(&folder.name, DEPTH)?;
    let physical = objects
        .iter()
        .map(|o| o.size)
        .fold(0u64, u64::saturating_add);
    // The blobs, and those an index names.
    let blob_dir = blobs::blobs_dir(&folder.name);
    let mut named: BTreeSet<Name> = BTreeSet::new();
    for object in &objects {
        if object.name.file_name() == Some(INDEX_FILE) {
            if let Ok(index) = read_index(storage, &object.name) {
                let dir = object.name.parent();
                let s = &index.model_checkpoint;
                for entry in s.shards.iter().chain(s.blobs.iter().flatten()) {
                    named.insert(dir.join(&entry.file));
                }
            }
        }
    }
    let in_blobs: Vec<_> = objects
        .iter()
        .filter(|o| {
            o.name.parent() == blob_dir
                && blobs::is_blob_reference(&format!(
                    "../{}/{}",
                    blobs::BLOBS_DIR,
                    o.name.file_name().unwrap_or_default()
                ))
        })
        .collect();
    let blob_bytes = in_blobs
        .iter()
        .map(|o| o.size)
        .fold(0u64, u64::saturating_add);
    let unnamed: Vec<_> = in_blobs
        .iter()
        .filter(|o| !named.contains(&o.name))
        .collect();
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
                "blobs": in_blobs.len(),
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
    out!("  blobs     {} ({blob_bytes} bytes)", in_blobs.len());
    if !unnamed.is_empty() {
        out!(
            "  unnamed   {} blob(s), {unnamed_bytes} bytes: no index names them (the next save of their run collects them)",
            unnamed.len()
        );
    }
    Ok(())
}
