//! An advisory lock per checkpoint folder, so that two trainers never interleave files in
//! one folder. Callbacks of one process share the lock.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::commit::remove_stale_temp_files;
use crate::Error;

/// The lock file's name inside a checkpoint folder.
pub const LOCK_FILE: &str = ".ckpt.lock";

/// How many times (10 ms apart) a busy lock is tried again before it is another holder's.
const RELEASE_WAITS: u32 = 20;

/// Folders this process holds, with the open lock file and how many holders share it.
static HELD: Mutex<BTreeMap<PathBuf, (File, usize)>> = Mutex::new(BTreeMap::new());

/// This process's claim on a checkpoint folder; dropping the last claim releases the lock.
#[derive(Debug)]
pub struct FolderLock {
    key: PathBuf,
}

impl FolderLock {
    /// Locks `dir` (which must exist) for this process. The first claim also removes the
    /// temporary files a crashed save left there: no one else can be writing them.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] when another process holds the folder; [`Error::Io`] when the lock
    /// file cannot be created or stale files cannot be removed.
    pub fn acquire(dir: &Path) -> Result<FolderLock, Error> {
        let key = dir
            .canonicalize()
            .map_err(|e| Error::io("open folder", dir, e))?;
        let mut held = HELD
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(entry) = held.get_mut(&key) {
            entry.1 += 1;
            return Ok(FolderLock { key });
        }
        let path = key.join(LOCK_FILE);
        let mut options = OpenOptions::new();
        options.create(true).truncate(false).write(true);
        // A FIFO planted under the lock's name must not block the open (with no reader it
        // fails at once instead), and anything but a regular file is refused below.
        // Nor may a link planted there make the lock create a file elsewhere.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::custom_flags(
            &mut options,
            libc::O_NONBLOCK | libc::O_NOFOLLOW,
        );
        let file = options
            .open(&path)
            .map_err(|e| Error::io("create lock file", &path, e))?;
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return Err(Error::NotARegularFile {
                path: path.into(),
                kind: "not a regular file",
            });
        }
        // A lock this process released a moment ago can still be held by a child another
        // thread is starting (between fork and exec the child shares every open file, and
        // with it the lock): wait a little for the exec before calling it another holder's.
        let mut attempts = 0;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if attempts < RELEASE_WAITS => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::Locked { dir: dir.into() });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
            }
        }
        // A trainer holding a folder above this one writes here too (templates with fields
        // in folder names): refuse, rather than remove its temporary files as stale.
        for ancestor in key.ancestors().skip(1) {
            if held.contains_key(ancestor) {
                continue;
            }
            if let Some(other) = held_elsewhere(ancestor) {
                return Err(Error::Locked { dir: other.into() });
            }
        }
        for stale in remove_stale_temp_files(&key)? {
            log::warn!(target: "model_checkpoint", "removed {}, left by an interrupted save", stale.display());
        }
        held.insert(key.clone(), (file, 1));
        Ok(FolderLock { key })
    }

    /// The locked folder.
    pub fn dir(&self) -> &Path {
        &self.key
    }
}

/// Whether another process holds `dir`'s lock: its lock file is a regular file that cannot
/// be locked now (probed without waiting, and released at once).
fn held_elsewhere(dir: &Path) -> Option<PathBuf> {
    let path = dir.join(LOCK_FILE);
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        &mut options,
        libc::O_NONBLOCK | libc::O_NOFOLLOW,
    );
    let file = options.open(&path).ok()?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return None;
    }
    match file.try_lock() {
        Ok(()) => None,
        Err(std::fs::TryLockError::WouldBlock) => Some(dir.to_path_buf()),
        Err(std::fs::TryLockError::Error(_)) => None,
    }
}

impl Drop for FolderLock {
    fn drop(&mut self) {
        let mut held = HELD
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(entry) = held.get_mut(&self.key) {
            entry.1 -= 1;
            if entry.1 == 0 {
                // Closing the file releases the lock; the file itself stays, harmlessly.
                held.remove(&self.key);
            }
        }
    }
}
