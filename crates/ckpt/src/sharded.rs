//! Sharded checkpoints on the command line: `ckpt consolidate`, and what `ls`, `verify` and
//! `show` see of a folder of shards with its index (or without it: an interrupted save), or
//! of a deduplicated checkpoint (an index naming blobs shared between checkpoints).

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use model_checkpoint::sharded::{ShardedCheckpoint, INDEX_FILE};
use model_checkpoint::store::{Meta, Name, Storage};

use crate::location::Location;
use crate::Failure;

/// Write one plain checkpoint file holding every global tensor of a sharded checkpoint.
///
/// Tensors are assembled one at a time while the file is written, so memory holds at most
/// one global tensor; every piece's checksum is checked on the way.
#[derive(Args, Debug)]
#[command(after_help = r#"Examples:
  ckpt consolidate ck/step-000450 model.safetensors
  ckpt consolidate s3://bucket/run/step-000450 model.safetensors"#)]
pub(crate) struct ConsolidateArgs {
    /// The sharded checkpoint's folder (or s3:// prefix).
    dir: PathBuf,
    /// The file to write (or s3:// object).
    out: PathBuf,
}

pub(crate) fn consolidate(args: ConsolidateArgs) -> Result<(), Failure> {
    let from = Location::of(&args.dir)?;
    let to = Location::of(&args.out)?;
    // An output never replaces an input: OUT may be neither the checkpoint's folder nor
    // anything in it (its index, a shard). Refused by name before anything is read or
    // written; the core's gate (`Claim::Derived`) then refuses any other file that
    // is not an earlier consolidated one.
    refuse_input_as_output(&from, &to, &args)?;
    let checkpoint = match ShardedCheckpoint::open(&*from.storage, &from.name) {
        Ok(checkpoint) => checkpoint,
        // No index there (not found, or a path through a file): what was given is no
        // folder checkpoint. A storage that failed to answer is its own error.
        Err(e @ model_checkpoint::Error::Io { .. }) if !e.is_read_failure() => {
            return Err(format!(
                "{} is not a sharded or deduplicated checkpoint (a folder holding {INDEX_FILE}): consolidate makes one file of one; a checkpoint file is one already",
                args.dir.display()
            )
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    let report = checkpoint.consolidate(&*to.storage, &to.name)?;
    // What was written, counted in the file itself (the core leaves the training state,
    // `__training__/` tensors, in the shards).
    let written = match model_checkpoint::store::CheckpointFile::open_in(
        &*to.storage,
        &to.name,
        model_checkpoint::store::Verify::HeaderOnly,
    ) {
        Ok(file) => file.tensors().count(),
        Err(_) => checkpoint
            .tensors()
            .keys()
            .filter(|n| !n.starts_with(model_checkpoint::store::TRAINING_PREFIX))
            .count(),
    };
    let left = checkpoint.tensors().len().saturating_sub(written);
    let (from_what, left_in) = if checkpoint.is_dedup() {
        ("a deduplicated checkpoint".to_owned(), "its blobs")
    } else {
        (format!("{} shards", checkpoint.world_size()), "the shards")
    };
    out!(
        "wrote {} ({written} tensors from {from_what}{}, {} bytes)",
        args.out.display(),
        if left > 0 {
            format!("; {left} training-state tensors left in {left_in}")
        } else {
            String::new()
        },
        report.bytes
    );
    Ok(())
}

/// Refuses an output that is the sharded checkpoint `from` or anything inside it.
fn refuse_input_as_output(
    from: &Location,
    to: &Location,
    args: &ConsolidateArgs,
) -> Result<(), Failure> {
    let (dir, out) = (from.identity(), to.identity());
    if !crate::location::within(&out, &dir) {
        return Ok(());
    }
    let file = out[dir.trim_end_matches('/').len()..].trim_start_matches('/');
    let what = if file.is_empty() {
        "the sharded checkpoint's folder itself".to_owned()
    } else if file == INDEX_FILE {
        "the index of the sharded checkpoint it reads".to_owned()
    } else if file.starts_with("shard-") && !file.contains('/') {
        "a shard of the sharded checkpoint it reads".to_owned()
    } else {
        "inside the sharded checkpoint it reads".to_owned()
    };
    Err(format!(
        "refusing to write {}: it is {what} ({}); an output never replaces an input: write the consolidated file elsewhere",
        args.out.display(),
        args.dir.display()
    )
    .into())
}

/// Whether folder `dir` of `storage` is a sharded checkpoint (it has an index).
pub(crate) fn is_sharded(storage: &dyn Storage, dir: &Name) -> bool {
    model_checkpoint::sharded::is_folder_checkpoint(storage, dir).unwrap_or(false)
}

/// Whether folder `dir` holds shards but no index: a sharded save that never committed.
pub(crate) fn is_interrupted(storage: &dyn Storage, dir: &Name) -> bool {
    !is_sharded(storage, dir)
        && storage.list(dir, 0).is_ok_and(|objects| {
            objects.iter().any(|o| {
                let file = o.name.file_name().unwrap_or_default();
                file.starts_with("shard-") && file.ends_with(".safetensors")
            })
        })
}

/// What a listing says of a sharded checkpoint: kind, metadata, bytes, whether every shard
/// verifies completely.
pub(crate) struct Summary {
    pub kind: String,
    pub meta: Meta,
    pub bytes: u64,
    pub verified: Result<(), String>,
    /// A file of it could not be read (see `Error::is_read_failure`).
    pub unreadable: bool,
}

/// Why a file failed, and whether it could not be read at all.
type Failed = (String, bool);

fn failed(e: model_checkpoint::Error) -> Failed {
    (e.to_string(), e.is_read_failure())
}

/// The verdict on each file (shard or blob) verified so far by this command, by name and
/// header digest: a blob shared by many deduplicated checkpoints is read once.
static VERIFIED: std::sync::Mutex<BTreeMap<FileVersion, Result<(), Failed>>> =
    std::sync::Mutex::new(BTreeMap::new());

/// A file, and the SHA-256 of its header: one version of it.
type FileVersion = (Name, [u8; 32]);

/// What kind of folder checkpoint `checkpoint` is, in words.
fn kind_of(checkpoint: &ShardedCheckpoint) -> String {
    let s = &checkpoint.index().model_checkpoint;
    match &s.blobs {
        Some(blobs) => format!("deduplicated ({} blobs)", blobs.len() + 1),
        None => format!("sharded ({} ranks)", s.world_size),
    }
}

/// Opens and fully verifies the sharded (or deduplicated) checkpoint in `dir`; its bytes are
/// those of every file it is made of, shared ones included.
pub(crate) fn summarize(storage: &dyn Storage, dir: &Name) -> Summary {
    let checkpoint = match ShardedCheckpoint::open(storage, dir) {
        Ok(c) => c,
        Err(e) => {
            let (text, unreadable) = failed(e);
            return Summary {
                kind: "sharded".to_owned(),
                meta: Meta::default(),
                bytes: 0,
                verified: Err(text),
                unreadable,
            };
        }
    };
    let s = &checkpoint.index().model_checkpoint;
    let bytes = s
        .shards
        .iter()
        .chain(s.blobs.iter().flatten())
        .map(|e| e.bytes)
        .fold(0u64, u64::saturating_add);
    let verified = checkpoint.files().try_for_each(|(name, file)| {
        let key = (file.path().clone(), file.header_digest());
        let mut done = VERIFIED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        done.entry(key)
            .or_insert_with(|| checkpoint.verify_file(name).map_err(failed))
            .clone()
    });
    let unreadable = matches!(verified, Err((_, true)));
    Summary {
        kind: kind_of(&checkpoint),
        meta: Meta::from_info(&s.metadata).unwrap_or_default(),
        bytes,
        verified: verified.map_err(|(text, _)| text),
        unreadable,
    }
}

/// The sharded checkpoints (folders with an index) and interrupted sharded saves (folders
/// with shards and no index) one level below `dir`.
pub(crate) fn folders_in(storage: &dyn Storage, dir: &Name) -> Result<Vec<(Name, bool)>, Failure> {
    let mut found: std::collections::BTreeMap<Name, bool> = Default::default();
    for object in storage.list(dir, 1)? {
        let (folder, Some(file)) = (object.name.parent(), object.name.file_name()) else {
            continue;
        };
        if folder == *dir {
            continue;
        }
        if file == INDEX_FILE {
            found.insert(folder, true);
        } else if file.starts_with("shard-") && file.ends_with(".safetensors") {
            found.entry(folder).or_insert(false);
        }
    }
    Ok(found.into_iter().collect())
}

/// `ckpt verify` of a sharded checkpoint: one line, and whether it verified (`Ok(true)`),
/// did not (`Ok(false)`), or could not be read (`Err`, the reason).
pub(crate) fn verify_line(storage: &dyn Storage, dir: &Name) -> (Result<bool, String>, String) {
    let summary = summarize(storage, dir);
    match summary.verified {
        Ok(()) => (
            Ok(true),
            format!("ok      {dir} ({}, {} bytes)", summary.kind, summary.bytes),
        ),
        Err(e) if summary.unreadable => (Err(format!("{dir}: {e}")), format!("ERROR   {dir}: {e}")),
        Err(e) => (Ok(false), format!("BAD     {dir}: {e}")),
    }
}

/// `ckpt show` of a sharded checkpoint.
pub(crate) fn show(storage: &dyn Storage, dir: &Name, json: bool) -> Result<(), Failure> {
    let checkpoint = ShardedCheckpoint::open(storage, dir)?;
    let s = &checkpoint.index().model_checkpoint;
    if json {
        // As `show --json` of a file, with the index's global tensors.
        let verified = summarize(storage, dir).verified;
        let tensors: Vec<_> = s
            .tensors
            .iter()
            .map(|(name, t)| {
                serde_json::json!({
                    "name": name,
                    "dtype": t.dtype,
                    "shape": t.global_shape,
                    "pieces": t.pieces.len(),
                })
            })
            .collect();
        crate::output::json(&serde_json::json!({
            "path": dir.as_str(),
            "kind": if s.metadata.contains_key(model_checkpoint::store::KEY_TRAINING_STATE) {
                model_checkpoint::store::Kind::Full
            } else {
                model_checkpoint::store::Kind::Weights
            }
            .to_string(),
            "layout": if s.blobs.is_some() { "deduplicated" } else { "sharded" },
            "world_size": s.world_size,
            "blobs": s.blobs.as_ref().map(Vec::len),
            "save_id": s.save_id,
            "verified": verified.is_ok(),
            "metadata": crate::inspect::metadata_json(&s.metadata),
            "tensors": tensors,
        }));
        return verified.map_err(Failure::verify);
    }
    match &s.blobs {
        Some(blobs) => {
            out!("deduplicated checkpoint: {dir}");
            out!("  blobs: {} and its head", blobs.len());
        }
        None => {
            out!("sharded checkpoint: {dir}");
            out!("  world size: {}", s.world_size);
        }
    }
    out!("  save id: {}", crate::shorten(&s.save_id, 100));
    for (k, v) in &s.metadata {
        out!("  {}: {}", crate::shorten(k, 100), crate::shorten(v, 200));
    }
    out!("tensors ({}):", s.tensors.len());
    for (name, t) in &s.tensors {
        out!(
            "  {}  {}  {:?}  {} piece(s)",
            crate::shorten(name, 120),
            t.dtype,
            t.global_shape,
            t.pieces.len()
        );
    }
    let summary = summarize(storage, dir);
    summary.verified.map_err(Failure::verify)
}
