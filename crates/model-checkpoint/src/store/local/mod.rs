//! [`LocalFolder`]: the [`Storage`] of a local file system, and the only place in the core
//! that touches it. A save writes a temporary file beside its destination, reserves the
//! header's bytes, streams the data after them, writes the header last, syncs, renames over
//! the destination and syncs the folder.

mod commit;
mod lock;
mod sys;

use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

pub use commit::{
    is_temp_file, remove_stale_temp_files, replace_with_link, CommitError, PendingFile, TEMP_SUFFIX,
};
pub use lock::{FolderLock, LOCK_FILE};
pub use sys::open_regular;

use super::storage::{Commit, ObjectMeta, ObjectReader, PendingObject, Storage, READ_CHUNK};
use super::Name;
use crate::Error;

/// Checkpoints in the local file system. Names are paths, relative to the folder given to
/// [`LocalFolder::new`] (or to the working directory for [`LocalFolder::default`]), or
/// absolute.
#[derive(Clone, Debug, Default)]
pub struct LocalFolder {
    root: PathBuf,
}

impl LocalFolder {
    /// Names relative to `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalFolder { root: root.into() }
    }

    /// The path of `name`, with `.` and `..` resolved lexically (see [`lexical`]).
    ///
    /// # Errors
    ///
    /// [`Error::BadLocation`] for a URL: a local folder never writes `s3://b/k` as a local
    /// path `s3:/b/k` (the storage for that scheme is another crate's).
    fn path(&self, name: &Name) -> Result<PathBuf, Error> {
        if let Some(scheme) = name.scheme() {
            return Err(Error::BadLocation {
                location: name.to_string(),
                reason: format!(
                    "it is a URL ({scheme}://), and this storage is the local file system: give ModelCheckpoint the storage for {scheme}:// (model_checkpoint_object_store)"
                ),
            });
        }
        let joined = if self.root.as_os_str().is_empty() {
            name.as_path().to_path_buf()
        } else {
            self.root.join(name.as_path())
        };
        let resolved = lexical(&joined);
        Ok(if resolved.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            resolved
        })
    }

    /// Starts a save to `path` (see [`Storage::create`]).
    pub(crate) fn create_at(
        path: &Path,
        head_len: u64,
        commit: Commit,
    ) -> Result<LocalPending, Error> {
        let mut pending = PendingFile::create(path)?;
        let temp = pending.temp_path().to_path_buf();
        pending
            .file()
            .seek(SeekFrom::Start(head_len))
            .map_err(|e| Error::io("write", &temp, e))?;
        Ok(LocalPending {
            pending: Some(pending),
            commit,
            head_len,
            written: head_len,
            kicked: head_len,
        })
    }

    /// Opens `path` for positioned reads: a regular file only, refused without blocking
    /// otherwise.
    pub(crate) fn open_at(path: &Path) -> Result<LocalReader, Error> {
        let file = open_regular(path)?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("inspect", path, e))?
            .len();
        Ok(LocalReader { file, len })
    }

    /// The regular files under `dir` (down to `depth` sub-folder levels, never following a
    /// link to a folder), other than temporary files and the lock file, sorted. A
    /// sub-folder this user may not list (a volume's `lost+found`, another user's folder)
    /// holds nothing the tool wrote, and is passed over with a warning; one gone meanwhile
    /// silently.
    pub(crate) fn files_in(dir: &Path, depth: usize) -> Result<Vec<(PathBuf, u64)>, Error> {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", dir, e))?;
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if depth > 0 {
                    match Self::files_in(&path, depth - 1) {
                        Ok(below) => files.extend(below),
                        Err(Error::Io { source, .. })
                            if source.kind() == io::ErrorKind::NotFound => {}
                        Err(Error::Io { source, .. })
                            if source.kind() == io::ErrorKind::PermissionDenied =>
                        {
                            log::warn!(
                                target: "model_checkpoint",
                                "passing over {}: it cannot be listed ({source})",
                                path.display()
                            );
                        }
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let marker = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(super::storage::MARKER_PREFIX));
            if !meta.is_file() || is_temp_file(&path) || entry.file_name() == LOCK_FILE || marker {
                continue;
            }
            files.push((path, meta.len()));
        }
        files.sort();
        Ok(files)
    }
}

/// `path` with `.` and `..` resolved lexically, as TensorFlow's `gfile` (through which Keras
/// makes folders) resolves them: `new/../ck` is `ck`, and no `new/` is made.
pub(crate) fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                let last = out.components().next_back();
                if matches!(last, Some(Component::Normal(_))) {
                    out.pop();
                } else if !matches!(last, Some(Component::RootDir | Component::Prefix(_))) {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

impl Storage for LocalFolder {
    fn names_after_writing(&self) -> bool {
        true
    }

    fn create(
        &self,
        name: &Name,
        head_len: u64,
        commit: Commit,
    ) -> Result<Box<dyn PendingObject>, Error> {
        Ok(Box::new(Self::create_at(
            &self.path(name)?,
            head_len,
            commit,
        )?))
    }

    fn put_if_absent(&self, name: &Name, bytes: &[u8]) -> Result<bool, Error> {
        let path = self.path(name)?;
        let mut file = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(Error::io("create", &path, e)),
        };
        // Not synced: markers only ever let retention delete more, so a marker lost in a
        // power cut costs an extra file, never a lost one (and its folder entry is made
        // durable by the next save's folder sync).
        file.write_all(bytes)
            .map_err(|e| Error::io("write", &path, e))?;
        Ok(true)
    }

    fn open(&self, name: &Name) -> Result<Box<dyn ObjectReader>, Error> {
        Ok(Box::new(Self::open_at(&self.path(name)?)?))
    }

    fn list(&self, dir: &Name, depth: usize) -> Result<Vec<ObjectMeta>, Error> {
        let files = Self::files_in(&self.path(dir)?, depth)?;
        Ok(files
            .into_iter()
            .map(|(path, size)| {
                let name = if self.root.as_os_str().is_empty() {
                    path
                } else {
                    path.strip_prefix(&self.root)
                        .map(Path::to_path_buf)
                        .unwrap_or(path)
                };
                ObjectMeta {
                    name: Name::from(name.as_path()),
                    size,
                }
            })
            .collect())
    }

    fn exists(&self, name: &Name) -> Result<bool, Error> {
        Ok(std::fs::symlink_metadata(self.path(name)?).is_ok())
    }

    fn exists_as_own(&self, name: &Name) -> Result<bool, Error> {
        let Ok(meta) = std::fs::symlink_metadata(self.path(name)?) else {
            return Ok(false);
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            // SAFETY: geteuid has no preconditions and cannot fail.
            let me = unsafe { libc::geteuid() };
            Ok(meta.is_file() && meta.uid() == me)
        }
        #[cfg(not(unix))]
        Ok(meta.is_file())
    }

    fn is_link(&self, name: &Name) -> Result<bool, Error> {
        let path = self.path(name)?;
        match std::fs::symlink_metadata(&path) {
            Ok(meta) => Ok(meta.file_type().is_symlink()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("inspect", &path, e)),
        }
    }

    fn delete(&self, name: &Name) -> Result<(), Error> {
        let path = self.path(name)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &path, e)),
        }
    }

    fn remove_empty_dir(&self, dir: &Name) -> Result<(), Error> {
        if dir.is_top() && dir.is_relative() {
            return Ok(());
        }
        let path = self.path(dir)?;
        // `remove_dir` removes only an empty folder, and never follows a link.
        match std::fs::remove_dir(&path) {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound
                        | io::ErrorKind::DirectoryNotEmpty
                        | io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(Error::io("remove folder", &path, e)),
        }
    }

    fn copy(&self, from: &Name, to: &Name, durable: bool) -> Result<(), Error> {
        replace_with_link(&self.path(from)?, &self.path(to)?, durable)
    }

    fn prepare_dir(&self, dir: &Name) -> Result<(), Error> {
        if dir.is_top() && dir.is_relative() {
            return Ok(());
        }
        let path = self.path(dir)?;
        if path.is_dir() {
            return Ok(());
        }
        std::fs::create_dir_all(&path).map_err(|e| Error::io("create folder", &path, e))
    }

    fn contains(&self, dir: &Name, name: &Name) -> bool {
        let (Ok(dir), Ok(path)) = (self.path(dir), self.path(name)) else {
            return false;
        };
        let parent = commit::parent_dir(&path);
        match (dir.canonicalize(), parent.canonicalize()) {
            (Ok(dir), Ok(parent)) => parent.starts_with(dir),
            _ => false,
        }
    }

    fn lock(&self, dir: &Name) -> Result<Option<Box<dyn std::any::Any + Send>>, Error> {
        let dir = self.path(dir)?;
        if !dir.is_dir() {
            return Ok(None);
        }
        Ok(Some(Box::new(FolderLock::acquire(&dir)?)))
    }
}

/// A local save in progress: the temporary file, positioned after the reserved head.
pub(crate) struct LocalPending {
    pending: Option<PendingFile>,
    commit: Commit,
    head_len: u64,
    written: u64,
    kicked: u64,
}

/// Writeback is started every time this much has been written.
const WRITEBACK_CHUNK: u64 = 8 << 20;

impl Write for LocalPending {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(pending) = self.pending.as_mut() else {
            return Err(io::Error::other("the save was already committed"));
        };
        let file = pending.file();
        let n = file.write(buf)?;
        self.written += n as u64;
        // Ask the kernel to start writing every few MiB as they arrive, so that the disk is
        // busy during the whole save instead of only during the final sync.
        if self.written - self.kicked >= WRITEBACK_CHUNK {
            sys::start_writeback(file, self.kicked, self.written - self.kicked);
            self.kicked = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.pending.as_mut() {
            Some(p) => p.file().flush(),
            None => Ok(()),
        }
    }
}

impl PendingObject for LocalPending {
    fn commit(mut self: Box<Self>, head: &[u8], durable: bool) -> Result<(), Error> {
        let Some(mut pending) = self.pending.take() else {
            return Ok(());
        };
        if head.len() as u64 != self.head_len {
            return Err(Error::io(
                "write",
                pending.temp_path(),
                io::Error::other(format!(
                    "a head of {} bytes was given for {} reserved",
                    head.len(),
                    self.head_len
                )),
            ));
        }
        let temp = pending.temp_path().to_path_buf();
        sys::write_all_at(pending.file(), head, 0).map_err(|e| Error::io("write", &temp, e))?;
        match self.commit {
            Commit::Replace => pending.commit(durable),
            Commit::CreateNew => pending.commit_new(durable),
        }
        .map_err(|e| *e.error)?;
        Ok(())
    }

    fn rename_to(&mut self, file_name: &str) -> Result<(), Error> {
        match self.pending.as_mut() {
            Some(pending) => pending.set_file_name(file_name),
            None => Err(Error::io(
                "rename",
                Path::new(file_name),
                io::Error::other("the save was already committed"),
            )),
        }
    }
}

/// A local file open for positioned reads.
pub(crate) struct LocalReader {
    file: std::fs::File,
    len: u64,
}

impl ObjectReader for LocalReader {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        sys::read_exact_at(&self.file, buf, offset)
    }

    /// Reads into the new buffer's memory as it comes from the allocator (never zeroed first:
    /// the reads overwrite every byte), chunk by chunk; a second core makes the memory of the
    /// chunks ahead present and checksums each chunk read.
    #[cfg(unix)]
    fn read_new_with_crc(&self, len: usize, offset: u64) -> io::Result<(Vec<u8>, u32)> {
        let mut out: Vec<u8> = Vec::new();
        out.try_reserve_exact(len)
            .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))?;
        // From here until `set_len`, the buffer is reached only through `base`: the reads
        // write each byte once, and the checksum thread reads only bytes already written.
        let base = out.as_mut_ptr();
        let region = base as usize;
        // Two chunks ahead of the reads, the checksum's core makes their memory present,
        // so that the reading core only copies.
        let ahead = |had: usize| {
            let chunks = if had == 0 { 0..2 } else { had + 1..had + 2 };
            for chunk in chunks {
                let at = chunk.saturating_mul(READ_CHUNK);
                if at < len {
                    sys::prefault(region + at, READ_CHUNK.min(len - at));
                }
            }
        };
        let mut done = 0usize;
        let crc = super::storage::crc_beside(&ahead, |send| {
            while done < len {
                let want = (len - done).min(READ_CHUNK);
                let at = offset + done as u64;
                // SAFETY: `base + done .. base + done + want` lies inside the `len` bytes
                // reserved above, which nothing else reads or writes yet.
                match unsafe { sys::read_raw_at(&self.file, base.add(done), want, at) } {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => {
                        // SAFETY: the read just wrote these `n` bytes; they are never
                        // written again.
                        let piece = unsafe { std::slice::from_raw_parts(base.add(done), n) };
                        done += n;
                        if !send(piece) {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })?;
        if done != len {
            return Err(io::Error::other("the checksum thread stopped early"));
        }
        // SAFETY: every one of the first `len` bytes was written by a read above (checked
        // just before: `done == len`).
        unsafe { out.set_len(len) };
        Ok((out, crc))
    }
}

#[cfg(test)]
mod tests {
    use super::lexical;
    use std::path::Path;

    #[test]
    fn dot_dot_resolves_lexically() {
        assert_eq!(lexical(Path::new("new/../ck/w")), Path::new("ck/w"));
        assert_eq!(lexical(Path::new("./a/./b/../c")), Path::new("a/c"));
        assert_eq!(lexical(Path::new("../x")), Path::new("../x"));
        assert_eq!(lexical(Path::new("/../x")), Path::new("/x"));
    }
}
