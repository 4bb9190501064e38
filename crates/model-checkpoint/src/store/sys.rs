//! Platform-specific file-system steps.

use std::io;
use std::path::Path;

/// Makes a completed rename in `dir` durable.
///
/// On Unix a rename is only durable once the folder itself is synced; opening a folder and
/// calling `fsync` on it is the documented way.
#[cfg(unix)]
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Windows offers no folder sync; `MoveFileEx` with write-through (what std's rename uses
/// where it can) is as durable as it gets.
#[cfg(not(unix))]
pub(crate) fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Asks the kernel to start writing `len` bytes at `offset` of `file` to disk now, without
/// waiting: the disk then works while the rest of the checkpoint is still being copied into
/// the page cache, and the final sync has little left to do. Only a hint; errors surface at
/// the sync.
#[cfg(target_os = "linux")]
pub(crate) fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::unix::io::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range only reads its integer arguments; the descriptor is open for
    // as long as `file` is borrowed.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn start_writeback(_file: &std::fs::File, _offset: u64, _len: u64) {}

/// Permissions for new checkpoint files: readable by others, as `open(path, "w")` would
/// make them (tempfile's default, 0600, would hide checkpoints from other accounts).
#[cfg(unix)]
pub(crate) fn checkpoint_permissions() -> Option<std::fs::Permissions> {
    use std::os::unix::fs::PermissionsExt;
    Some(std::fs::Permissions::from_mode(0o666))
}

#[cfg(not(unix))]
pub(crate) fn checkpoint_permissions() -> Option<std::fs::Permissions> {
    None
}
