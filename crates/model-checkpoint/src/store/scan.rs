//! Finding checkpoints in a folder: listing them in training order (by the epoch and step
//! stored in them, never by modification time), and the newest full checkpoint that
//! verifies (what `resume latest` takes).

use std::path::{Path, PathBuf};

use super::Name;

use super::layout::Kind;
use super::local::LocalFolder;
use super::meta::Meta;
use super::read::{CheckpointFile, Verify};
use super::storage::Storage;
use crate::Error;

/// A file in a checkpoint folder, with what its header says (or why it could not be read).
#[derive(Debug)]
pub struct Listed {
    /// The file.
    pub path: Name,
    /// Its size in bytes.
    pub size: u64,
    /// Its header, if it opened: the kind, whether it has checksums, and its metadata.
    pub header: Result<Header, Error>,
}

/// What a listing reads from each file's header.
#[derive(Debug)]
pub struct Header {
    /// Weights only, or full.
    pub kind: Kind,
    /// Whether the file carries this format's checksums.
    pub has_checksums: bool,
    /// Its metadata.
    pub meta: Meta,
}

impl Listed {
    /// Where in training the file was saved (epoch, step, batch: see [`Meta::position`]);
    /// `(0, 0, 0)` for a file whose header is unreadable.
    pub fn position(&self) -> super::meta::Position {
        self.header
            .as_ref()
            .map_or((0, 0, 0), |h| h.meta.position())
    }
}

/// The files in `dir` that may be checkpoints: regular files other than temporary files and
/// the lock file, sorted by name.
///
/// # Errors
///
/// [`Error::Io`] if the folder cannot be listed.
pub fn candidate_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    Ok(LocalFolder::files_in(dir, 0)?
        .into_iter()
        .map(|(p, _)| p)
        .collect())
}

/// Reads the header of each file, opening it with `open`.
fn read_headers(
    files: Vec<(Name, u64)>,
    open: impl Fn(&Name) -> Result<CheckpointFile, Error>,
) -> Vec<Listed> {
    files
        .into_iter()
        .map(|(path, size)| {
            let header = open(&path).and_then(|f| {
                let meta = Meta::from_info(f.info()).map_err(|r| Error::corrupt(&path, r))?;
                Ok(Header {
                    kind: f.kind(),
                    has_checksums: f.has_checksums(),
                    meta,
                })
            });
            Listed { path, size, header }
        })
        .collect()
}

/// The objects of `storage` in the folder `dir` (down to `depth` sub-folders), with their
/// headers, in training order.
///
/// # Errors
///
/// [`Error::Io`] if the folder cannot be listed.
pub fn list_in(storage: &dyn Storage, dir: &Name, depth: usize) -> Result<Vec<Listed>, Error> {
    let internal = |name: &Name| {
        let file = name.file_name().unwrap_or_default();
        file.starts_with(super::storage::MARKER_PREFIX)
            || file == super::LOCK_FILE
            || file == super::storage::HISTORY_FILE
            || super::is_temp_file(Path::new(file))
    };
    let objects = storage
        .list(dir, depth)?
        .into_iter()
        .filter(|o| !internal(&o.name))
        .map(|o| (o.name, o.size))
        .collect();
    let mut listed = read_headers(objects, |p| {
        CheckpointFile::open_in(storage, p, Verify::HeaderOnly)
    });
    listed.retain(|l| l.header.is_ok() || may_be_checkpoint(storage, &l.path, l.size));
    sort_by_position(&mut listed);
    Ok(listed)
}

/// Whether a file whose header did not read may be a damaged checkpoint, rather than one of
/// the user's files that a listing leaves out (notes, a `CSVLogger`'s CSV, a script): it is
/// named `.safetensors`, or it begins as a safetensors file does (a header length within the
/// limit, then the header's `{`: a checkpoint cut short still does), or it could not be read
/// at all.
fn may_be_checkpoint(storage: &dyn Storage, name: &Name, size: u64) -> bool {
    if name.as_str().ends_with(".safetensors") {
        return true;
    }
    let mut prefix = [0u8; 9];
    if size < prefix.len() as u64 {
        // Shorter than a header's length and its `{`: no checkpoint begins so.
        return false;
    }
    let read = storage
        .open(name)
        .map(|file| file.read_exact_at(&mut prefix, 0));
    if !matches!(read, Ok(Ok(()))) {
        return true;
    }
    super::read::begins_as_safetensors(&prefix)
}

/// The checkpoints in `dir` in training order, oldest first: by the epoch and step stored in
/// them, then by name. Files whose header cannot be read come first.
///
/// # Errors
///
/// [`Error::Io`] if the folder cannot be listed.
pub fn list(dir: &Path) -> Result<Vec<Listed>, Error> {
    let files = LocalFolder::files_in(dir, 0)?
        .into_iter()
        .map(|(path, size)| (Name::from(path), size))
        .collect();
    let mut listed = read_headers(files, |p| {
        CheckpointFile::open(p.as_path(), Verify::HeaderOnly)
    });
    sort_by_position(&mut listed);
    Ok(listed)
}

/// Sorts a listing in training order, as [`list_in`] returns it: entries whose header did
/// not read first, then by where in training each was saved, then `save_last`'s copy
/// (`last.safetensors`, or a deduplicated run's `last/`) before the save it stands for, so
/// that the newest is the save's own name, which stays; then by name (a listing of files
/// with one of folder checkpoints added, say).
pub fn sort_by_position(listed: &mut [Listed]) {
    let key = |l: &Listed| {
        let own = !l.path.file_name().is_some_and(super::is_last_name);
        (l.header.is_ok(), l.position(), own)
    };
    listed.sort_by(|a, b| (key(a), &a.path).cmp(&(key(b), &b.path)));
}

/// The newest full checkpoint in `dir` that verifies, by the epoch and step stored in the
/// files (then by name). Damaged files are skipped with a warning naming the file and the
/// damage; weights-only files and files that are not checkpoints are passed over. A file
/// the storage fails to read (a disk's or an endpoint's error) is not skipped: it may be
/// the newest, and resuming from an older one would train again what it holds.
///
/// # Errors
///
/// [`Error::NoCheckpoint`] when no full checkpoint in `dir` verifies; [`Error::Io`] if the
/// folder cannot be listed, or a file newer than the one found cannot be read.
pub fn latest_full(dir: &Path) -> Result<Name, Error> {
    newest_that_verifies(list(dir)?, &Name::from(dir), |p| {
        CheckpointFile::open(p.as_path(), Verify::Full)
    })
}

/// Like [`latest_full`], in the folder `dir` of `storage`.
///
/// # Errors
///
/// As [`latest_full`].
pub fn latest_full_in(storage: &dyn Storage, dir: &Name) -> Result<Name, Error> {
    latest_full_matching(storage, dir, 0, &|_| true)
}

/// Like [`latest_full_in`], down to `depth` sub-folders, among the names `keep` accepts.
///
/// # Errors
///
/// As [`latest_full`].
pub fn latest_full_matching(
    storage: &dyn Storage,
    dir: &Name,
    depth: usize,
    keep: &dyn Fn(&Name) -> bool,
) -> Result<Name, Error> {
    let listed = list_in(storage, dir, depth)?
        .into_iter()
        .filter(|l| keep(&l.path))
        .collect();
    newest_that_verifies(listed, dir, |p| {
        CheckpointFile::open_in(storage, p, Verify::Full)
    })
}

/// The newest full checkpoint among `listed` (in training order) that verifies in
/// `storage`, with damaged ones skipped with a warning; [`Error::NoCheckpoint`] naming `dir`
/// when none does.
pub(crate) fn newest_verified_in(
    storage: &dyn Storage,
    dir: &Name,
    listed: Vec<Listed>,
) -> Result<Name, Error> {
    newest_that_verifies(listed, dir, |p| {
        CheckpointFile::open_in(storage, p, Verify::Full)
    })
}

fn newest_that_verifies(
    listed: Vec<Listed>,
    dir: &Name,
    open: impl Fn(&Name) -> Result<CheckpointFile, Error>,
) -> Result<Name, Error> {
    // A file whose header could not be read has no known place in training order (the
    // listing puts it first): it may be the newest, so nothing is taken (see
    // `latest_full`).
    let (unread, listed): (Vec<Listed>, Vec<Listed>) = listed
        .into_iter()
        .partition(|l| l.header.as_ref().is_err_and(Error::is_read_failure));
    if let Some(Listed { header: Err(e), .. }) = unread.into_iter().next() {
        return Err(e);
    }
    let mut skipped = 0usize;
    for entry in listed.into_iter().rev() {
        let reason = match entry.header {
            Err(e) => e,
            Ok(h) if h.kind != Kind::Full => continue,
            Ok(_) => match open(&entry.path) {
                Ok(_) => {
                    if skipped > 0 {
                        warn_resuming(&entry.path);
                    }
                    return Ok(entry.path);
                }
                Err(e) if e.is_read_failure() => return Err(e),
                Err(e) => e,
            },
        };
        skipped += 1;
        warn_skipping(&entry.path, &reason);
    }
    Err(Error::NoCheckpoint { dir: dir.clone() })
}

/// The warning of a search for the newest checkpoint that passes over `name`, which did not
/// open or verify: a damaged file's error names it; any other names what was at fault (a
/// blob or index of a folder checkpoint, a read), after the checkpoint passed over.
pub(crate) fn warn_skipping(name: &Name, e: &Error) {
    match e {
        Error::Corrupt { path, .. } if path == name => {
            log::warn!(target: "model_checkpoint", "skipping {e}")
        }
        e => log::warn!(target: "model_checkpoint", "skipping {}: {e}", name.display()),
    }
}

/// The warning of a search that took `name` after passing over newer checkpoints.
pub(crate) fn warn_resuming(name: &Name) {
    log::warn!(
        target: "model_checkpoint",
        "resuming from {}, the newest full checkpoint that verifies",
        name.display()
    );
}
