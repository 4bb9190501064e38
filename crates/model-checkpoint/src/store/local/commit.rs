//! The temporary file a save writes to, and its commit.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::sys;
use crate::Error;

/// The suffix of every temporary checkpoint file: such a file is never a checkpoint.
pub const TEMP_SUFFIX: &str = ".ckpt-tmp";

/// The names of the temporary files this process is writing now (each with how many
/// such files have it, in different folders), which a folder's cleanup must not take for a
/// crashed save's: another thread may be writing beside checkpoints whose folder is being
/// locked (a history rewritten in the background). Names only: a stale file that shares
/// one with a live file elsewhere is left, never a live one taken.
static LIVE: Mutex<BTreeMap<OsString, usize>> = Mutex::new(BTreeMap::new());

fn live() -> MutexGuard<'static, BTreeMap<OsString, usize>> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A temporary file's place among the live ones, given up when dropped.
#[derive(Debug)]
struct Live(OsString);

impl Live {
    /// Registers `path`'s name (the caller holds the registry, so that no cleanup runs
    /// between the file's creation and this).
    fn register(live: &mut BTreeMap<OsString, usize>, path: &Path) -> Live {
        let name = path.file_name().unwrap_or_default().to_owned();
        *live.entry(name.clone()).or_insert(0) += 1;
        Live(name)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let mut live = live();
        if let Some(count) = live.get_mut(&self.0) {
            *count -= 1;
            if *count == 0 {
                live.remove(&self.0);
            }
        }
    }
}

/// A file being written beside its destination under a temporary name.
///
/// Dropping it without [`PendingFile::commit`] removes the temporary file.
#[derive(Debug)]
pub struct PendingFile {
    temp: tempfile::NamedTempFile,
    dest: PathBuf,
    /// Dropped after `temp` (fields drop in order): the file is gone or renamed by then.
    _live: Live,
}

/// A failed commit, handing the pending file back (when it was not yet renamed) so that the
/// caller can retry or drop it (which removes the temporary file).
#[derive(Debug, thiserror::Error)]
#[error("cannot commit to {}: {error}", .dest.display())]
pub struct CommitError {
    /// What went wrong.
    pub error: Box<Error>,
    /// The destination.
    pub dest: PathBuf,
    /// The uncommitted file; `None` when the rename happened but the folder could not be
    /// synced (the new file is in place but may not survive a power cut).
    pub pending: Option<Box<PendingFile>>,
}

impl From<CommitError> for Error {
    fn from(e: CommitError) -> Error {
        *e.error
    }
}

impl PendingFile {
    /// Creates `.NAME.RANDOM.ckpt-tmp` in the destination's folder (the same file system, so
    /// that the final rename is atomic).
    ///
    /// # Errors
    ///
    /// [`Error::IsADirectory`] if `dest` is a folder, [`Error::Io`] if the folder is missing
    /// or not writable.
    pub fn create(dest: &Path) -> Result<Self, Error> {
        check_replaceable(dest)?;
        let dir = parent_dir(dest);
        let name = temp_stem(dest, 6);
        let prefix = format!(".{name}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(TEMP_SUFFIX);
        if let Some(permissions) = sys::checkpoint_permissions() {
            builder.permissions(permissions);
        }
        let mut live = live();
        let temp = builder
            .tempfile_in(dir)
            .map_err(|e| Error::io("create a temporary file in", dir, e))?;
        let registered = Live::register(&mut live, temp.path());
        drop(live);
        Ok(PendingFile {
            temp,
            dest: dest.to_path_buf(),
            _live: registered,
        })
    }

    /// The open temporary file.
    pub fn file(&mut self) -> &mut File {
        self.temp.as_file_mut()
    }

    /// The temporary file's path.
    pub fn temp_path(&self) -> &Path {
        self.temp.path()
    }

    /// The destination.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Commits to `file_name` in the destination's folder instead (where the temporary
    /// file is, so the rename stays atomic).
    ///
    /// # Errors
    ///
    /// [`Error::BadLocation`] for a `file_name` that is not one plain file name.
    pub fn set_file_name(&mut self, file_name: &str) -> Result<(), Error> {
        let plain = !file_name.is_empty()
            && file_name != "."
            && file_name != ".."
            && !file_name.contains(['/', '\\', '\0']);
        if !plain {
            return Err(Error::BadLocation {
                location: crate::text::shorten(file_name, 200),
                reason: "not one plain file name".to_owned(),
            });
        }
        self.dest.set_file_name(file_name);
        Ok(())
    }

    /// Moves the file to its destination, replacing what was there.
    ///
    /// # Durability
    ///
    /// With `durable`, the file's data is synced before the rename and the folder after it,
    /// so once this returns the new file survives a power cut; before the rename the old
    /// destination is untouched. Without `durable`, the rename is still atomic for other
    /// processes, but a power cut may lose the new file's contents.
    ///
    /// # Errors
    ///
    /// A [`CommitError`] holding the pending file; the destination is unchanged.
    pub fn commit(self, durable: bool) -> Result<PathBuf, CommitError> {
        self.commit_as(durable, true)
    }

    /// Like [`PendingFile::commit`], but only if nothing exists at the destination: of
    /// several writers racing for one name exactly one succeeds (a hard link, which fails
    /// on an existing name); the others get [`Error::AlreadyExists`].
    ///
    /// # Errors
    ///
    /// A [`CommitError`] holding the pending file; the destination is unchanged.
    pub fn commit_new(self, durable: bool) -> Result<PathBuf, CommitError> {
        self.commit_as(durable, false)
    }

    fn commit_as(mut self, durable: bool, replace: bool) -> Result<PathBuf, CommitError> {
        if durable {
            // fdatasync: the data and the size, which is all a reader needs; the rename is
            // made durable by syncing the folder below.
            if let Err(e) = self.temp.as_file_mut().sync_data() {
                let error = Error::io("sync", self.temp.path(), e);
                return Err(CommitError {
                    error: Box::new(error),
                    dest: self.dest.clone(),
                    pending: Some(Box::new(self)),
                });
            }
        }
        let dest = self.dest.clone();
        if let Err(error) = check_replaceable(&dest) {
            return Err(CommitError {
                error: Box::new(error),
                dest,
                pending: Some(Box::new(self)),
            });
        }
        let persisted = if replace {
            self.temp.persist(&dest)
        } else {
            self.temp.persist_noclobber(&dest)
        };
        match persisted {
            Ok(_) => {}
            Err(e) => {
                let error = if !replace && e.error.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::AlreadyExists {
                        name: dest.to_string_lossy().into_owned(),
                    }
                } else {
                    Error::io("rename a temporary file to", &dest, e.error)
                };
                let pending = PendingFile {
                    temp: e.file,
                    dest: dest.clone(),
                    _live: self._live,
                };
                return Err(CommitError {
                    error: Box::new(error),
                    dest,
                    pending: Some(Box::new(pending)),
                });
            }
        }
        if durable {
            // The rename has happened; if the folder sync fails the new file is in place but
            // may not survive a power cut: not durable, so not a success.
            let dir = parent_dir(&dest);
            if let Err(e) = sys::sync_dir(dir) {
                return Err(CommitError {
                    error: Box::new(Error::io("sync folder", dir, e)),
                    dest,
                    pending: None,
                });
            }
        }
        Ok(dest)
    }
}

/// Makes `dest` another name for the committed file `src`, replacing whatever `dest` was,
/// atomically: a hard link under a temporary name, renamed over `dest`. Where hard links are
/// impossible (another file system), the file is copied and synced instead.
///
/// # Durability
///
/// `src` is already durable; with `durable`, the folder is synced after the rename (and a
/// copy is synced before it).
///
/// # Errors
///
/// [`Error::Io`] naming the paths; `dest` is unchanged.
pub fn replace_with_link(src: &Path, dest: &Path, durable: bool) -> Result<(), Error> {
    let dir = parent_dir(dest);
    // The tag: `PID-N`, at most 10 + 1 + 10 characters.
    let name = temp_stem(dest, 21);
    let mut attempt = 0u32;
    let (temp, _registered) = loop {
        let candidate = dir.join(format!(
            ".{name}.{}-{attempt}{TEMP_SUFFIX}",
            std::process::id()
        ));
        // Registered before it exists, so that no cleanup takes it meanwhile; the link or
        // the copy is made outside the registry's lock.
        let registered = Live::register(&mut live(), &candidate);
        match std::fs::hard_link(src, &candidate) {
            Ok(()) => break (candidate, registered),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1
            }
            Err(_) => {
                // No hard links here: copy, and sync the copy (a failed one is removed).
                let copied = std::fs::copy(src, &candidate)
                    .map_err(|e| Error::io("copy a checkpoint to", &candidate, e))
                    .and_then(|_| {
                        if !durable {
                            return Ok(());
                        }
                        File::open(&candidate)
                            .and_then(|f| f.sync_all())
                            .map_err(|e| Error::io("sync", &candidate, e))
                    });
                if let Err(e) = copied {
                    let _ = std::fs::remove_file(&candidate);
                    return Err(e);
                }
                break (candidate, registered);
            }
        }
    };
    let renamed = check_replaceable(dest).and_then(|()| {
        std::fs::rename(&temp, dest).map_err(|e| Error::io("rename a temporary file to", dest, e))
    });
    // Gone once renamed, except where `dest` was already a link to the same file (rename
    // then does nothing): never left behind.
    let _ = std::fs::remove_file(&temp);
    renamed?;
    if durable {
        sys::sync_dir(dir).map_err(|e| Error::io("sync folder", dir, e))?;
    }
    Ok(())
}

/// Refuses to replace what is not a checkpoint's to replace: a folder, a FIFO, a socket or a
/// device at `dest` (a save renames over its destination, which would swap a device node
/// for a regular file). A regular file or a link (the link itself is replaced, never its
/// target) may be replaced; a missing one is created.
fn check_replaceable(dest: &Path) -> Result<(), Error> {
    let Ok(meta) = std::fs::symlink_metadata(dest) else {
        return Ok(());
    };
    let kind = meta.file_type();
    if kind.is_dir() {
        return Err(Error::IsADirectory { path: dest.into() });
    }
    if kind.is_file() || kind.is_symlink() {
        return Ok(());
    }
    Err(Error::NotARegularFile {
        path: dest.into(),
        kind: sys::file_type_name(&kind),
    })
}

/// The folder holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Whether `path` names a temporary file left by a save (never a checkpoint): exactly the
/// shapes this module makes, `.NAME.XXXXXX.ckpt-tmp` (six random letters or digits) and
/// `.NAME.PID-N.ckpt-tmp` (the `last` link's). Templates that would produce such names are
/// refused, so no checkpoint can be taken for one.
pub fn is_temp_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let Some(inner) = name
        .strip_prefix('.')
        .and_then(|n| n.strip_suffix(TEMP_SUFFIX))
    else {
        return false;
    };
    let Some((stem, tag)) = inner.rsplit_once('.') else {
        return false;
    };
    let random = tag.len() == 6 && tag.bytes().all(|b| b.is_ascii_alphanumeric());
    let link = tag.split_once('-').is_some_and(|(pid, n)| {
        !pid.is_empty()
            && !n.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && n.bytes().all(|b| b.is_ascii_digit())
    });
    !stem.is_empty() && (random || link)
}

/// The longest file name most file systems take, in bytes.
const MAX_NAME_BYTES: usize = 255;

/// `dest`'s file name as a temporary name beside it carries it (`.NAME.TAG.ckpt-tmp`),
/// cut short (at a character boundary) so that the whole stays within the 255 bytes a file
/// name may have: a destination name of 240 bytes is legal, its temporary name must be too.
fn temp_stem(dest: &Path, tag_len: usize) -> String {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let room = MAX_NAME_BYTES
        .saturating_sub(2 + tag_len + TEMP_SUFFIX.len())
        .max(1);
    if name.len() <= room {
        return name;
    }
    let mut end = room;
    while end > 0 && !name.is_char_boundary(end) {
        end -= 1;
    }
    if end == 0 {
        return "checkpoint".to_owned();
    }
    name[..end].to_owned()
}

/// Removes the temporary files a crashed save left in `dir`, returning their paths.
///
/// Call it only when no other process is saving into `dir` (hold the folder's lock): a
/// temporary file of a save in progress looks the same. This process's own files in
/// progress are spared.
///
/// # Errors
///
/// [`Error::Io`] if the folder cannot be listed or a file cannot be removed.
pub fn remove_stale_temp_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut removed = Vec::new();
    let live = live();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| Error::io("list", dir, e))?.path();
        let in_progress = path.file_name().is_some_and(|n| live.contains_key(n));
        if is_temp_file(&path) && path.is_file() && !in_progress {
            std::fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
            removed.push(path);
        }
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_over_a_link_to_the_same_file_leaves_no_temporary_file() {
        // `rename` of one name of a file onto another name of it does nothing: the
        // temporary name stayed behind when `last` was linked to the same save twice.
        let dir = tempfile::tempdir().expect("tempdir");
        let (src, dest) = (dir.path().join("a.st"), dir.path().join("last.st"));
        std::fs::write(&src, b"checkpoint").expect("write");
        replace_with_link(&src, &dest, true).expect("linked");
        replace_with_link(&src, &dest, true).expect("linked again");
        assert_eq!(std::fs::read(&dest).expect("read"), b"checkpoint");
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["a.st", "last.st"]);
    }
}
