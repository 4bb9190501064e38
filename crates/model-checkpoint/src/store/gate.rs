//! The one gate for deletes and replaces. Everything this crate, its backends and `ckpt`
//! delete, and every name they replace other than a template's own (retention of files and
//! of sharded folders, markers, `save_last`'s `last` and `last/`, interrupt saves, the
//! journal, consolidate's output, the report's output, a broken lock) goes through
//! [`delete`] or [`check_replace`] with a [`Claim`]: what the caller believes the object
//! is. The gate checks the claim against the object itself and refuses otherwise, so that no
//! file this tool did not write for that purpose is ever deleted or replaced, whatever a
//! checkpoint, a journal, a template or a flag says.
//!
//! `tests/layers.rs` checks that no other module calls [`Storage::delete`].
//!
//! ```
//! use model_checkpoint::store::{gate, LocalFolder, Name, Storage};
//! let dir = tempfile::tempdir()?;
//! let folder = LocalFolder::new(dir.path());
//! std::fs::write(dir.path().join("notes.txt"), "mine")?;
//! // A page `ckpt report` would replace must carry the signature it writes.
//! let refused = gate::check_replace(&folder, &Name::new("notes.txt")?, gate::Claim::Signed);
//! assert!(refused.is_err());
//! let mut page = b"<!doctype html><p>report</p>".to_vec();
//! gate::sign(&mut page);
//! let report = Name::new("report.html")?;
//! folder.put_if_absent(&report, &page)?;
//! gate::check_replace(&folder, &report, gate::Claim::Signed)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::meta::Meta;
use super::read::{CheckpointFile, Verify};
use super::side_file::{read_small, MAX_SIDE_FILE_BYTES};
use super::storage::{Storage, MARKER_PREFIX};
use super::Name;
use crate::Error;

/// What a caller believes an object is; the gate deletes or replaces it only if the object
/// proves it.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub enum Claim<'a> {
    /// A checkpoint file of run `run_id`: its header carries that id, and with `digest`,
    /// its header's SHA-256 is that one (the file the caller committed, or the one the
    /// run's marker names).
    RunCheckpoint {
        /// The run's id (never empty).
        run_id: &'a str,
        /// The header digest the caller knows the file by, if any.
        digest: Option<[u8; 32]>,
    },
    /// A marker run `run_id` left: an empty object named `.ckpt-run.<run_id>.<hex>`.
    Marker {
        /// The run's id.
        run_id: &'a str,
    },
    /// A shard of a sharded checkpoint of run `run_id` (of any run this tool saved, with
    /// `None`: what `save_last`'s `last/` holds): a file with this format's checksums whose
    /// header carries the run's id.
    ShardedPart {
        /// The run's id, or `None` for any.
        run_id: Option<&'a str>,
    },
    /// A document (a sharded checkpoint's index, a history) that `check` accepts, read from
    /// the object (at most `limit` bytes: the most the format's readers read, so that the
    /// gate never reads more of a file than a reader would): the caller knows the format,
    /// the gate reads the bytes. `what` names it in a refusal.
    Document {
        /// What the caller believes it is.
        what: &'a str,
        /// The largest such document; a larger object is not one.
        limit: u64,
        /// Whether the bytes are that.
        check: &'a dyn Fn(&[u8]) -> Result<(), String>,
    },
    /// A checkpoint this tool wrote, of any run (its header has this format's checksums): what
    /// a name the tool keeps for one purpose holds (`last.safetensors`, a consolidated file).
    ToolCheckpoint,
    /// A file made from another checkpoint by `ckpt consolidate`
    /// ([`crate::sharded::ShardedCheckpoint::consolidate`]) or `ckpt export`
    /// ([`super::export()`]): a checkpoint with this format's checksums whose header
    /// records what it was made from ([`KEY_CONSOLIDATED_FROM`] or
    /// [`KEY_EXPORTED_FROM`]).
    Derived,
    /// A side file the tool rewrites whole (the run's journal): it begins with `first_line`.
    SideFile {
        /// The line the tool writes first.
        first_line: &'a str,
    },
    /// A page or picture a command wrote: it ends with the signature [`sign`] appends, over
    /// exactly the bytes before it (an edited page is no longer the tool's).
    Signed,
    /// A lock object whose content is exactly `holder` (as read just before).
    Lock {
        /// The lock's content.
        holder: &'a [u8],
    },
    /// The name a user's filepath template produced: Keras overwrites whatever is there, and
    /// so do saves at a template's own names (the user named that file as the output).
    TemplateName,
}

// By hand, because a `Document`'s check is a closure: it shows as its `what`.
impl std::fmt::Debug for Claim<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Claim::RunCheckpoint { run_id, digest } => f
                .debug_struct("RunCheckpoint")
                .field("run_id", run_id)
                .field("digest", &digest.is_some())
                .finish(),
            Claim::Marker { run_id } => f.debug_struct("Marker").field("run_id", run_id).finish(),
            Claim::ShardedPart { run_id } => f
                .debug_struct("ShardedPart")
                .field("run_id", run_id)
                .finish(),
            Claim::Document { what, .. } => f.debug_struct("Document").field("what", what).finish(),
            Claim::ToolCheckpoint => f.write_str("ToolCheckpoint"),
            Claim::Derived => f.write_str("Derived"),
            Claim::SideFile { first_line } => f
                .debug_struct("SideFile")
                .field("first_line", first_line)
                .finish(),
            Claim::Signed => f.write_str("Signed"),
            Claim::Lock { holder } => f
                .debug_struct("Lock")
                .field("bytes", &holder.len())
                .finish(),
            Claim::TemplateName => f.write_str("TemplateName"),
        }
    }
}

/// The metadata key of a consolidated checkpoint: the save id of the sharded checkpoint it
/// was made from.
pub const KEY_CONSOLIDATED_FROM: &str = "consolidated_from";

/// The metadata key of an exported checkpoint: the SHA-256 (hex) of the header of the file
/// it was exported from. The deletion gate lets a later export replace it
/// ([`Claim::Derived`]).
pub const KEY_EXPORTED_FROM: &str = "exported_from";

/// The largest page or picture the gate reads to check its signature.
const MAX_SIGNED_BYTES: u64 = 256 << 20;

/// The signature [`sign`] appends: this opening, the CRC-32 of everything before it in hex,
/// and [`SIGNATURE_END`]. A comment in HTML and XML alike.
const SIGNATURE_START: &str = "\n<!-- written by ckpt; crc32 ";
const SIGNATURE_END: &str = " -->\n";

/// Appends the signature that lets [`Claim::Signed`] recognise `bytes` later: a comment
/// (valid at the end of an HTML page and after an SVG's root element) holding the CRC-32 of
/// everything before it.
pub fn sign(bytes: &mut Vec<u8>) {
    let crc = crc32fast::hash(bytes);
    bytes.extend_from_slice(SIGNATURE_START.as_bytes());
    bytes.extend_from_slice(format!("{crc:08x}").as_bytes());
    bytes.extend_from_slice(SIGNATURE_END.as_bytes());
}

/// Whether `bytes` end with the signature [`sign`] appends, over exactly the bytes before it.
pub fn is_signed(bytes: &[u8]) -> bool {
    let tail = SIGNATURE_START.len() + 8 + SIGNATURE_END.len();
    let Some(split) = bytes.len().checked_sub(tail) else {
        return false;
    };
    let (body, signature) = bytes.split_at(split);
    let Some(hex) = signature
        .strip_prefix(SIGNATURE_START.as_bytes())
        .and_then(|s| s.strip_suffix(SIGNATURE_END.as_bytes()))
    else {
        return false;
    };
    std::str::from_utf8(hex)
        .ok()
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .is_some_and(|crc| crc == crc32fast::hash(body))
}

/// Deletes `name` if it is what `claim` says (a missing object is already gone).
///
/// # Errors
///
/// [`Error::NotOurs`] naming the object and what it lacks; the storage's errors.
pub fn delete(storage: &dyn Storage, name: &Name, claim: Claim<'_>) -> Result<(), Error> {
    if !storage.exists(name)? {
        return Ok(());
    }
    prove(storage, name, claim)?;
    storage.delete(name)
}

/// Removes the folder `dir` if nothing is left in it (a sharded checkpoint's folder once
/// retention deleted its parts); a folder that still holds anything stays. Object stores
/// have no folders.
///
/// # Errors
///
/// The storage's errors other than the folder being missing or not empty.
pub fn remove_empty_folder(storage: &dyn Storage, dir: &Name) -> Result<(), Error> {
    storage.remove_empty_dir(dir)
}

/// Whether `name` may be replaced by a new object: it is free, or what `claim` says.
///
/// # Errors
///
/// [`Error::NotOurs`] naming the object and what it lacks; the storage's errors.
pub fn check_replace(storage: &dyn Storage, name: &Name, claim: Claim<'_>) -> Result<(), Error> {
    if matches!(claim, Claim::TemplateName) || !storage.exists(name)? {
        return Ok(());
    }
    prove(storage, name, claim)
}

/// Checks `claim` against the object `name`, which exists.
fn prove(storage: &dyn Storage, name: &Name, claim: Claim<'_>) -> Result<(), Error> {
    let refuse = |reason: String| Error::NotOurs {
        name: crate::text::shorten(name.as_str(), 200),
        reason,
    };
    let file_name = name.file_name().unwrap_or_default();
    // Every object the tool writes is a file: a link under a managed name was put there by
    // someone else (its target may well be one of ours, which is why it is not enough to
    // read through it).
    if !matches!(claim, Claim::TemplateName) && storage.is_link(name)? {
        return Err(refuse(
            "it is a symbolic link, and this tool writes only files".to_owned(),
        ));
    }
    match claim {
        Claim::TemplateName => Ok(()),
        Claim::RunCheckpoint { run_id, digest } => {
            let file = open_header(storage, name)
                .map_err(|e| refuse(format!("it is not a checkpoint this tool wrote ({e})")))?;
            carries_run(&file, run_id).map_err(refuse)?;
            match digest {
                Some(d) if d != file.header_digest() => Err(refuse(
                    "its header is not the one this run wrote there".to_owned(),
                )),
                _ => Ok(()),
            }
        }
        Claim::Marker { run_id } => {
            let own = format!("{MARKER_PREFIX}{run_id}.");
            let is_marker = !run_id.is_empty()
                && file_name.strip_prefix(&own).is_some_and(|hex| {
                    !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit())
                });
            if !is_marker {
                return Err(refuse(format!("it is not a marker of run {run_id}")));
            }
            match storage.open(name) {
                Ok(reader) if reader.is_empty() => Ok(()),
                Ok(_) => Err(refuse("a marker is empty, and this is not".to_owned())),
                Err(e) => Err(refuse(e.to_string())),
            }
        }
        Claim::ShardedPart { run_id } => {
            let file = open_header(storage, name)
                .map_err(|e| refuse(format!("it is not a checkpoint this tool wrote ({e})")))?;
            if !file.has_checksums() {
                return Err(refuse(
                    "it is not a shard this tool wrote (no checksums)".to_owned(),
                ));
            }
            match run_id {
                Some(id) => carries_run(&file, id).map_err(refuse),
                None => Ok(()),
            }
        }
        Claim::Document { what, limit, check } => {
            let bytes = read_small(storage, name, limit, what)
                .map_err(|e| refuse(e.to_string()))?
                .unwrap_or_default();
            check(&bytes).map_err(|why| refuse(format!("it is not {what}: {why}")))
        }
        Claim::ToolCheckpoint => {
            let file = open_header(storage, name)
                .map_err(|e| refuse(format!("it is not a checkpoint this tool wrote ({e})")))?;
            if file.has_checksums() {
                Ok(())
            } else {
                Err(refuse(
                    "it is not a checkpoint this tool wrote (no checksums)".to_owned(),
                ))
            }
        }
        Claim::Derived => {
            let file = open_header(storage, name)
                .map_err(|e| refuse(format!("it is not a checkpoint this tool wrote ({e})")))?;
            let info = file.info();
            if file.has_checksums()
                && (info.contains_key(KEY_CONSOLIDATED_FROM)
                    || info.contains_key(KEY_EXPORTED_FROM))
            {
                Ok(())
            } else {
                Err(refuse(
                    "it is not a file ckpt consolidate or ckpt export wrote".to_owned(),
                ))
            }
        }
        Claim::SideFile { first_line } => {
            let bytes =
                read_small(storage, name, MAX_SIDE_FILE_BYTES, "a side file")?.unwrap_or_default();
            if bytes.starts_with(first_line.as_bytes()) {
                Ok(())
            } else {
                Err(refuse(format!(
                    "it does not begin with the line this tool writes ({first_line:?})"
                )))
            }
        }
        Claim::Signed => {
            let bytes = read_small(storage, name, MAX_SIGNED_BYTES, "a page")
                .map_err(|e| refuse(e.to_string()))?
                .unwrap_or_default();
            if is_signed(&bytes) {
                Ok(())
            } else {
                Err(refuse(
                    "it is not a page or picture ckpt wrote (or it was edited since)".to_owned(),
                ))
            }
        }
        Claim::Lock { holder } => {
            let bytes = read_small(storage, name, 4096, "a lock")?.unwrap_or_default();
            if bytes == holder {
                Ok(())
            } else {
                Err(refuse("its holder changed since it was read".to_owned()))
            }
        }
    }
}

fn open_header(storage: &dyn Storage, name: &Name) -> Result<CheckpointFile, Error> {
    CheckpointFile::open_in(storage, name, Verify::HeaderOnly)
}

/// Whether `file`'s header names run `run_id`.
fn carries_run(file: &CheckpointFile, run_id: &str) -> Result<(), String> {
    let id = Meta::from_info(file.info())?.run_id;
    if run_id.is_empty() || id.as_deref() != Some(run_id) {
        return Err(format!("it does not carry run id {run_id}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_covers_every_byte_before_it() {
        let mut page = b"<svg></svg>".to_vec();
        sign(&mut page);
        assert!(is_signed(&page));
        let mut edited = page.clone();
        edited[1] = b'S';
        assert!(!is_signed(&edited));
        assert!(!is_signed(b"<!doctype html>"));
        assert!(!is_signed(b""));
    }
}
