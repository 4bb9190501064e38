//! The seam between checkpoints and where they live: a local folder ([`LocalFolder`]), an
//! object store, or memory in a test. Everything the callback layer does to files (saving,
//! the `last` copy, versions, retention's deletes, the lock, listing for `latest`) goes
//! through [`Storage`].
//!
//! A save is one [`PendingObject`]: its bytes are written in order, except for a head of a
//! length fixed in advance (the safetensors header, whose checksums are known only at the
//! end), which is handed over at [`PendingObject::commit`]. A local file reserves the head's
//! bytes and writes them last; an object store can upload the head as the first part of a
//! multipart upload after the others. Nothing appears under the name before the commit, and
//! dropping a pending object aborts it.
//!
//! [`LocalFolder`]: super::LocalFolder

use std::fmt;
use std::io::{self, Write};

use super::Name;
use crate::Error;

/// Objects whose names start with this (in a checkpoint folder) are markers a run leaves to
/// prove later which files it wrote; they are never checkpoints, and templates may not
/// produce such names.
pub const MARKER_PREFIX: &str = ".ckpt-run.";

/// The journal of saves and deletes a run keeps beside its checkpoints when asked to
/// (`ModelCheckpoint::journal`). Its name starts with [`MARKER_PREFIX`]: like the markers,
/// it is what a run leaves to tell later which files it wrote, and listings skip it.
pub const JOURNAL_FILE: &str = ".ckpt-run.journal.csv";

/// The training history `ckpt train` keeps beside its checkpoints (a `CsvLogger` file):
/// listings skip it, and templates may not produce it.
pub const HISTORY_FILE: &str = "history.csv";

/// What a commit does when its name is already taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Commit {
    /// Replace the object atomically: readers see the old one or the new one (Keras's
    /// overwriting saves).
    #[default]
    Replace,
    /// Fail with [`Error::AlreadyExists`] and leave the existing object alone; of several
    /// writers racing for one name exactly one succeeds (`overwrite(false)`'s versions).
    CreateNew,
}

/// One object in a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Its name, as [`Storage::open`] takes it.
    pub name: Name,
    /// Its size in bytes.
    pub size: u64,
}

/// Where checkpoints live.
///
/// Names are `/`-separated; a backend maps them to its own paths or keys. A backend decides
/// what is an object: a local folder lists regular files only, so a FIFO or a device planted
/// in a checkpoint folder is never opened.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Starts writing `name`, whose first `head_len` bytes are given at the commit, which
    /// then acts as `commit` says on a name already taken.
    ///
    /// # Errors
    ///
    /// [`Error::IsADirectory`] when `name` is a folder; [`Error::Io`] when the object cannot
    /// be started (missing folder, no permission, no space).
    fn create(
        &self,
        name: &Name,
        head_len: u64,
        commit: Commit,
    ) -> Result<Box<dyn PendingObject>, Error>;

    /// Writes a small object only if nothing exists under `name` yet; `Ok(false)` when the
    /// name is taken. Markers use it. A backend need not make it durable at once.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the write fails.
    fn put_if_absent(&self, name: &Name, bytes: &[u8]) -> Result<bool, Error>;

    /// Opens `name` for positioned reads.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when it cannot be opened, [`Error::FolderNotFile`] for a folder,
    /// [`Error::NotARegularFile`] for anything that is not an object.
    fn open(&self, name: &Name) -> Result<Box<dyn ObjectReader>, Error>;

    /// The objects whose names lie in the folder `dir` (the top: [`Name::top`]), down to `depth`
    /// levels of sub-folders, sorted by name.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the folder cannot be listed.
    fn list(&self, dir: &Name, depth: usize) -> Result<Vec<ObjectMeta>, Error>;

    /// Whether an object exists under `name` (for picking a free version name).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the backend cannot tell.
    fn exists(&self, name: &Name) -> Result<bool, Error>;

    /// Whether an object exists under `name` and was written by this account, as far as
    /// the backend can tell (a local folder compares the file's owner with this process's
    /// user, so that a marker planted by another user of a shared folder does not count).
    /// Default: [`Storage::exists`].
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the backend cannot tell.
    fn exists_as_own(&self, name: &Name) -> Result<bool, Error> {
        self.exists(name)
    }

    /// Whether `name` is a symbolic link (a local folder's; object stores have none). The
    /// deletion gate refuses links: the tool writes files, so a link is someone else's.
    /// Default: no.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the backend cannot tell.
    fn is_link(&self, name: &Name) -> Result<bool, Error> {
        let _ = name;
        Ok(false)
    }

    /// Whether a new object may not take `name`: it exists, or a backend's writer holds it
    /// (an object store's claim during a commit). Versions (`NAME-vN`) skip taken names.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the backend cannot tell.
    fn taken(&self, name: &Name) -> Result<bool, Error> {
        self.exists(name)
    }

    /// Deletes the object `name`; a missing one is not an error. Never follows a link: a
    /// link planted under `name` is removed, not its target.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the delete fails.
    fn delete(&self, name: &Name) -> Result<(), Error>;

    /// Removes the folder `dir` if it is empty; one that holds anything, or none at all, is
    /// left as it is. Default: nothing (object stores have no folders). Called through
    /// [`super::gate::remove_empty_folder`].
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the folder is empty and cannot be removed.
    fn remove_empty_dir(&self, dir: &Name) -> Result<(), Error> {
        let _ = dir;
        Ok(())
    }

    /// Makes `to` hold what `from` holds, replacing `to` atomically (a hard link, a copy, a
    /// server-side copy).
    ///
    /// # Errors
    ///
    /// [`Error::Io`]; `to` is unchanged.
    fn copy(&self, from: &Name, to: &Name, durable: bool) -> Result<(), Error>;

    /// Makes the folder `dir` ready to hold objects (a local folder is created; object
    /// stores have no folders).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the folder cannot be made.
    fn prepare_dir(&self, dir: &Name) -> Result<(), Error>;

    /// Whether `name` lies inside the folder `dir`, after whatever resolution the backend
    /// does (a local folder follows links): retention deletes only inside its own folder.
    fn contains(&self, dir: &Name, name: &Name) -> bool;

    /// Takes the folder `dir` for this process: a second writer fails with
    /// [`Error::Locked`]. The claim lasts as long as the returned guard; `None` when there is
    /// nothing to lock yet (a local folder that does not exist: it is locked once a save
    /// has made it). Taking it also clears what an interrupted save left there.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`], or [`Error::Io`].
    fn lock(&self, dir: &Name) -> Result<Option<Box<dyn std::any::Any + Send>>, Error>;

    /// Whether a pending object may be renamed before its commit
    /// ([`PendingObject::rename_to`]). Default: no.
    fn names_after_writing(&self) -> bool {
        false
    }
}

/// An object being written; see the module documentation.
pub trait PendingObject: Write + Send {
    /// Completes the object with its head: from now on it is visible, whole, under its name
    /// (and with `durable`, survives a power cut).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming what failed; the object does not appear (except where the
    /// backend says otherwise: a local folder whose sync fails after the rename).
    fn commit(self: Box<Self>, head: &[u8], durable: bool) -> Result<(), Error>;

    /// Changes the name the object is committed under to `file_name` in the same folder,
    /// before the commit: what lets an object be named after its content, known only once
    /// written. Only where [`Storage::names_after_writing`] says so.
    ///
    /// # Errors
    ///
    /// [`Error::BadLocation`] where the backend names an object when it starts it (an
    /// upload to a key), or for a `file_name` that is not one plain file name.
    fn rename_to(&mut self, file_name: &str) -> Result<(), Error> {
        Err(Error::BadLocation {
            location: crate::text::shorten(file_name, 200),
            reason: "this storage names an object when it starts writing it".to_owned(),
        })
    }
}

/// An object open for reading at any offset.
pub trait ObjectReader: Send + Sync {
    /// Its size when opened.
    fn len(&self) -> u64;

    /// Whether it is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` from `offset`; `UnexpectedEof` when the object is shorter than that (it
    /// was truncated since it was opened).
    ///
    /// # Errors
    ///
    /// The backend's I/O error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Fills `buf` from `offset`, as [`ObjectReader::read_exact_at`], and returns the CRC-32
    /// of the bytes read: how a verified load reads a large tensor, so that checking costs
    /// no time of its own. The default reads in 1 MiB chunks with each chunk's checksum on
    /// a second core while the next is read; an object store fetches parts of the range at
    /// once instead (on S3, from 16 MiB), each checked as it arrives.
    ///
    /// # Errors
    ///
    /// The backend's I/O error.
    fn read_with_crc_at(&self, buf: &mut [u8], offset: u64) -> io::Result<u32> {
        if buf.len() < 2 * READ_CHUNK {
            self.read_exact_at(buf, offset)?;
            return Ok(crc32fast::hash(buf));
        }
        crc_beside(&|_| {}, |send| {
            let mut at = offset;
            for chunk in buf.chunks_mut(READ_CHUNK) {
                self.read_exact_at(chunk, at)?;
                at += chunk.len() as u64;
                if !send(chunk) {
                    break;
                }
            }
            Ok(())
        })
    }

    /// Reads `len` bytes from `offset` into a new buffer, and returns it with their CRC-32,
    /// as [`ObjectReader::read_with_crc_at`] does. The default fills a zeroed buffer; a
    /// local file is read straight into the buffer's fresh memory instead, which is then
    /// never zeroed first (that zeroing cost a verified load about a fifth of its time).
    ///
    /// # Errors
    ///
    /// The backend's I/O error; [`io::ErrorKind::OutOfMemory`] when `len` bytes cannot be
    /// had.
    fn read_new_with_crc(&self, len: usize, offset: u64) -> io::Result<(Vec<u8>, u32)> {
        let mut out = Vec::new();
        out.try_reserve_exact(len)
            .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))?;
        out.resize(len, 0);
        let crc = self.read_with_crc_at(&mut out, offset)?;
        Ok((out, crc))
    }
}

/// The chunk [`ObjectReader::read_with_crc_at`] reads at a time by default.
pub(crate) const READ_CHUNK: usize = 1 << 20;

/// Reads with the checksum on a second core: `read` runs on this thread and hands each
/// piece it has read, in order, to `send`, which passes it to a second thread that
/// checksums the pieces as they come (two may wait). That thread calls `ahead(0)` before
/// any piece, and `ahead(n)` once it has the n-th piece, before checksumming it (a local
/// file makes the memory of the pieces to come present there). `send` returns false once
/// the second thread is gone, and `read` should then stop. Returns the CRC-32 of every
/// piece sent; `read`'s error first.
pub(crate) fn crc_beside<'p>(
    ahead: &(dyn Fn(usize) + Sync),
    read: impl FnOnce(&mut dyn FnMut(&'p [u8]) -> bool) -> io::Result<()>,
) -> io::Result<u32> {
    std::thread::scope(|scope| {
        let (pieces, sums) = std::sync::mpsc::sync_channel::<&'p [u8]>(2);
        let spawned = std::thread::Builder::new().spawn_scoped(scope, move || {
            let mut hasher = crc32fast::Hasher::new();
            ahead(0);
            for (had, piece) in sums.into_iter().enumerate() {
                ahead(had + 1);
                hasher.update(piece);
            }
            hasher.finalize()
        });
        let Ok(crc) = spawned else {
            // No second thread to be had (the process's limit): each piece is checksummed
            // here once read.
            let mut hasher = crc32fast::Hasher::new();
            let mut had = 0;
            ahead(0);
            read(&mut |piece| {
                had += 1;
                ahead(had);
                hasher.update(piece);
                true
            })?;
            return Ok(hasher.finalize());
        };
        let read = read(&mut |piece| pieces.send(piece).is_ok());
        drop(pieces);
        let crc = crc
            .join()
            .map_err(|_| io::Error::other("the checksum thread failed"));
        read.and(crc)
    })
}
