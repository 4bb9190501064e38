//! Finding checkpoints in a folder: listing them, and the newest full checkpoint that
//! verifies (what `resume latest` takes).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::commit::is_temp_file;
use super::layout::Kind;
use super::lock::LOCK_FILE;
use super::read::{CheckpointFile, Verify};
use crate::Error;

/// The files in `dir` that may be checkpoints: regular files other than temporary files and
/// the lock file, newest first (by modification time, then name).
///
/// # Errors
///
/// [`Error::Io`] if the folder cannot be listed.
pub fn candidate_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    let mut files: Vec<(SystemTime, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() || is_temp_file(&path) || entry.file_name() == LOCK_FILE {
            continue;
        }
        files.push((meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), path));
    }
    files.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// The newest full checkpoint in `dir` that verifies. Newer files that fail to verify are
/// skipped with a warning naming the file and the damage; weights-only files and files that
/// are not checkpoints are passed over.
///
/// # Errors
///
/// [`Error::NoCheckpoint`] when no full checkpoint in `dir` verifies; [`Error::Io`] if the
/// folder cannot be listed.
pub fn latest_full(dir: &Path) -> Result<PathBuf, Error> {
    let mut skipped = 0usize;
    for path in candidate_files(dir)? {
        match CheckpointFile::open(&path, Verify::Full) {
            Ok(file) if file.kind() == Kind::Full => {
                if skipped > 0 {
                    log::warn!(
                        target: "model_checkpoint",
                        "resuming from {}, the newest full checkpoint that verifies",
                        path.display()
                    );
                }
                return Ok(path);
            }
            Ok(_) => {}
            Err(Error::Corrupt { path, reason }) => {
                skipped += 1;
                log::warn!(target: "model_checkpoint", "skipping {}: {reason}", path.display());
            }
            Err(e) => {
                skipped += 1;
                log::warn!(target: "model_checkpoint", "skipping {}: {e}", path.display());
            }
        }
    }
    Err(Error::NoCheckpoint {
        dir: dir.to_path_buf(),
    })
}
