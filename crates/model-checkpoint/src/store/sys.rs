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
