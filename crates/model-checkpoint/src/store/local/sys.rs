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

/// Opens `path` for reading only if it is a regular file (following symbolic links).
///
/// The file is opened without blocking, so that a FIFO with no writer, a socket or a device
/// is refused at once instead of hanging the open; the type is then checked on the open
/// descriptor, so that a file swapped in between cannot slip through.
///
/// # Errors
///
/// [`Error::Io`] if the file cannot be opened, [`Error::FolderNotFile`] for a folder, and
/// [`Error::NotARegularFile`] for anything else that is not a regular file.
pub fn open_regular(path: &Path) -> Result<std::fs::File, crate::Error> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options
        .open(path)
        .map_err(|e| crate::Error::io("open", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| crate::Error::io("inspect", path, e))?;
    if meta.is_dir() {
        return Err(crate::Error::FolderNotFile { path: path.into() });
    }
    if !meta.is_file() {
        return Err(crate::Error::NotARegularFile {
            path: path.into(),
            kind: file_type_name(&meta.file_type()),
        });
    }
    Ok(file)
}

/// A word for a file type, for error messages.
pub(crate) fn file_type_name(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Fills `buf` from `file` at `offset` without moving a shared cursor (`pread`), so that many
/// readers can share one descriptor. A file shorter than asked gives `UnexpectedEof`.
#[cfg(unix)]
pub(crate) fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
pub(crate) fn read_exact_at(
    file: &std::fs::File,
    mut buf: &mut [u8],
    mut offset: u64,
) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads up to `len` bytes of `file` at `offset` into the memory at `dst` (`pread`),
/// returning how many it read (0 at the end of the file).
///
/// # Safety
///
/// `dst` must be valid for writes of `len` bytes, and nothing may read or write that
/// memory while this runs (making its pages present, as [`prefault`] does, is neither).
#[cfg(unix)]
pub(crate) unsafe fn read_raw_at(
    file: &std::fs::File,
    dst: *mut u8,
    len: usize,
    offset: u64,
) -> io::Result<usize> {
    use std::os::unix::io::AsRawFd;
    let offset = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset beyond off_t"))?;
    // SAFETY: the caller vouches for `dst` and `len`; the descriptor is open for as long as
    // `file` is borrowed; the kernel writes at most `len` bytes there.
    let n = unsafe { libc::pread(file.as_raw_fd(), dst.cast(), len, offset) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Has the kernel back the `len` bytes at address `start` with memory now
/// (`MADV_POPULATE_WRITE`, Linux 5.14 on; nothing elsewhere), so that a read into them takes
/// no page faults. A helper thread does it ahead of the reads, moving the faults (a third of
/// the time of a large read into fresh memory here) to another core. Pages already there
/// are left as they are: their contents never change.
#[cfg(target_os = "linux")]
pub(crate) fn prefault(start: usize, len: usize) {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    // SAFETY: sysconf only reads its integer argument.
    let size = *PAGE.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 && (n as usize).is_power_of_two() => n as usize,
        _ => 4096,
    });
    let page = start & !(size - 1);
    let len = len.saturating_add(start - page);
    // SAFETY: MADV_POPULATE_WRITE only makes pages present (a missing one as a zeroed page,
    // as a first write would); it never changes what a present page holds. An address
    // outside the process's memory is refused with an error, ignored here.
    unsafe {
        libc::madvise(page as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn prefault(_start: usize, _len: usize) {}

/// Writes all of `buf` into `file` at `offset`, without moving its cursor (`pwrite`).
#[cfg(unix)]
pub(crate) fn write_all_at(file: &std::fs::File, buf: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

#[cfg(windows)]
pub(crate) fn write_all_at(
    file: &std::fs::File,
    mut buf: &[u8],
    mut offset: u64,
) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_write(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
