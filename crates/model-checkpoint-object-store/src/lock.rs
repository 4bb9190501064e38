//! The folder lock on object storage: an object `.ckpt.lock` created only if absent
//! (`If-None-Match: *`), holding who took it and when. A second trainer gets
//! [`Error::LockedBy`] naming the holder. S3 has no leases, so a lock whose holder died stays
//! until someone breaks it (`ckpt unlock URL`, or deleting the object); the error says so.
//!
//! A trainer writes into the folders below its own too (templates with fields in folder
//! names), so, as the local lock does, taking a folder is refused while a folder above it is
//! locked by another holder; and, which the local lock does not, while a folder below it is
//! (found by listing up to [`MAX_LOCK_SCAN_PAGES`] pages below: a lock deeper in a larger
//! tree may go unseen). Both checks come after the lock object is created, so of two
//! trainers racing for nested folders at least one sees the other.
//!
//! Breaking a lock (`ckpt unlock`) goes through the core's deletion gate, which deletes it
//! only if it still names the holder that was read; and without `force` it refuses while
//! the holder is a process alive on this host (its pid runs, and started no later than the
//! lock was taken: a reused pid does not count).

use std::io;
use std::sync::{Arc, Mutex};

use model_checkpoint::store::{gate, Name, LOCK_FILE};
use model_checkpoint::Error;
use object_store::path::Path as Key;

use crate::limits::MAX_LOCK_SCAN_PAGES;
use crate::listing::{self, Bounds};
use crate::{Inner, ObjectStorage};

/// The locks this process holds: their objects' names and contents, and how many holders
/// (callbacks of this process) share each. A folder above or below one of them is this
/// process's own, as a local folder's is, and two callbacks of one process share a folder's
/// lock (as they share a local folder's).
static HELD: Mutex<Vec<(String, Vec<u8>, usize)>> = Mutex::new(Vec::new());

fn held_here(name: &str, content: &[u8]) -> bool {
    HELD.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .any(|(n, c, _)| n == name && c == content)
}

/// Held while a trainer writes into the folder; dropping it deletes the lock object (if it
/// is still this holder's).
pub(crate) struct RemoteLock {
    inner: Arc<Inner>,
    name: String,
    holder: Vec<u8>,
    /// Whether a failure to release is only logged for debugging (the lock was refused).
    quiet: bool,
}

impl std::fmt::Debug for RemoteLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteLock")
            .field("name", &self.name)
            .finish()
    }
}

/// This host's name, as a lock records it.
fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "an unknown host".to_owned())
}

/// Who this process is, as a lock records it: host, pid, when the lock was taken, and
/// (on Linux) the boot and the process's start in clock ticks since boot, which tell this
/// process from a later one given the same pid.
fn holder() -> serde_json::Value {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut value = serde_json::json!({
        "host": this_host(),
        "pid": std::process::id(),
        "since_unix": since,
    });
    if let (Some(boot), Some(process)) = (proc::boot_id(), proc::process(std::process::id())) {
        value["boot_id"] = boot.into();
        value["start_ticks"] = process.start_ticks.into();
    }
    value
}

/// How a lock's content reads in an error: `host H, process P, since T (Unix time)`.
pub(crate) fn describe(content: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(content) else {
        return "an unknown holder (the lock object is not this tool's)".to_owned();
    };
    let field = |k: &str| {
        value
            .get(k)
            .map(|v| v.to_string().trim_matches('"').to_owned())
            .map(|s| crate::names::shorten(&s))
            .unwrap_or_else(|| "?".to_owned())
    };
    format!(
        "host {}, process {}, since {} (Unix time)",
        field("host"),
        field("pid"),
        field("since_unix")
    )
}

/// The key of folder `dir`'s lock.
fn lock_key(dir: &Key) -> Key {
    Key::from_iter(dir.parts().chain(std::iter::once(LOCK_FILE.into())))
}

/// Takes the lock of folder `dir` (a URL).
pub(crate) fn acquire(inner: &Arc<Inner>, dir: &str) -> Result<RemoteLock, Error> {
    let dir_key = inner.bucket.key_of(dir)?;
    let key = lock_key(&dir_key);
    let name = inner.bucket.name(&key);
    {
        // Already this process's: one more holder shares it.
        let mut held = HELD
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(entry) = held.iter_mut().find(|(n, _, _)| *n == name) {
            entry.2 += 1;
            return Ok(RemoteLock {
                inner: inner.clone(),
                name,
                holder: entry.1.clone(),
                quiet: false,
            });
        }
    }
    let content = holder().to_string().into_bytes();
    if !crate::put_if_absent(inner, &name, &key, &content)? {
        let existing = crate::get_small(inner, &name, &key).unwrap_or_default();
        return Err(Error::LockedBy {
            dir: inner.bucket.name(&dir_key).trim_end_matches('/').to_owned(),
            holder: describe(&existing),
        });
    }
    HELD.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((name.clone(), content.clone(), 1));
    let mut lock = RemoteLock {
        inner: inner.clone(),
        name,
        holder: content,
        quiet: false,
    };
    // A server that ignores `If-None-Match: *` would let a second create succeed too,
    // and every lock, version and claim would be an illusion: refuse to work on it.
    let checked = match crate::put_if_absent(inner, &lock.name, &key, &lock.holder) {
        Ok(true) => Err(Error::BadLocation {
            location: inner.bucket.url(),
            reason: "this server ignores conditional creates (If-None-Match: *): locks and versions would not be exclusive".to_owned(),
        }),
        Ok(false) => check_nested(inner, &dir_key),
        Err(e) => Err(e),
    };
    if let Err(e) = checked {
        // Refused: the lock just taken goes (or stays, if the server fails now too; the
        // error that refused it is the one to report).
        lock.quiet = true;
        return Err(e);
    }
    Ok(lock)
}

/// Refuses when a folder above `dir` or below it holds another holder's lock.
fn check_nested(inner: &Arc<Inner>, dir: &Key) -> Result<(), Error> {
    let parts: Vec<_> = dir.parts().collect();
    for depth in (0..parts.len()).rev() {
        check_folder(inner, &Key::from_iter(parts[..depth].iter().cloned()))?;
    }
    let own = parts.len() + 1;
    let (below, _complete) = listing::objects(
        inner,
        &inner.bucket.name(dir),
        dir,
        false,
        Bounds {
            pages: MAX_LOCK_SCAN_PAGES,
            partial_ok: true,
        },
        |key| key.filename() == Some(LOCK_FILE) && key.parts().count() > own,
    )?;
    for object in below {
        let folder: Vec<_> = object.location.parts().collect();
        check_folder(
            inner,
            &Key::from_iter(folder[..folder.len() - 1].iter().cloned()),
        )?;
    }
    Ok(())
}

/// Refuses when folder `dir` holds a lock that is not this process's.
fn check_folder(inner: &Arc<Inner>, dir: &Key) -> Result<(), Error> {
    let key = lock_key(dir);
    let name = inner.bucket.name(&key);
    match crate::get_small(inner, &name, &key) {
        Ok(content) if held_here(&name, &content) => Ok(()),
        Ok(content) => Err(Error::LockedBy {
            dir: inner.bucket.name(dir).trim_end_matches('/').to_owned(),
            holder: describe(&content),
        }),
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl Drop for RemoteLock {
    fn drop(&mut self) {
        {
            let mut held = HELD
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(i) = held
                .iter()
                .position(|(n, c, _)| *n == self.name && *c == self.holder)
            {
                held[i].2 -= 1;
                if held[i].2 > 0 {
                    // Another holder of this process still has it.
                    return;
                }
                held.swap_remove(i);
            }
        }
        // Through the gate: only this holder's lock goes; one broken and taken by another
        // trainer stays.
        let storage = ObjectStorage {
            inner: self.inner.clone(),
        };
        let released = gate::delete(
            &storage,
            &Name::from(self.name.as_str()),
            gate::Claim::Lock {
                holder: &self.holder,
            },
        );
        let name = &self.name;
        match released {
            Ok(()) => {}
            Err(e) if self.quiet => {
                log::debug!(target: "model_checkpoint", "cannot release the lock {name}: {e}");
            }
            Err(Error::NotOurs { .. }) => {
                log::warn!(target: "model_checkpoint", "{name} was broken and taken by another trainer: left to it");
            }
            Err(e) => {
                log::warn!(target: "model_checkpoint", "cannot release the lock {name} (break it with `ckpt unlock`): {e}");
            }
        }
    }
}

/// Whether a lock's holder may still be running.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// Another host's (or no process this tool names): nothing here can tell.
    Elsewhere,
    /// A process of this host that has ended (or a pid now reused by a later process).
    Gone,
    /// A process of this host that runs.
    Alive,
    /// A process of this host, on a system without `/proc`: cannot tell.
    Unknown,
}

/// Whether the holder `content` names still runs.
pub(crate) fn liveness(content: &[u8]) -> Liveness {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(content) else {
        return Liveness::Elsewhere;
    };
    if value.get("host").and_then(|h| h.as_str()) != Some(this_host().as_str()) {
        return Liveness::Elsewhere;
    }
    let Some(pid) = value
        .get("pid")
        .and_then(|p| p.as_u64())
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0 && i32::try_from(*p).is_ok())
    else {
        return Liveness::Gone;
    };
    if !proc::available() {
        return Liveness::Unknown;
    }
    let Some(process) = proc::process(pid) else {
        return Liveness::Gone;
    };
    let boot = value.get("boot_id").and_then(|b| b.as_str());
    let ticks = value.get("start_ticks").and_then(|t| t.as_u64());
    if let (Some(boot), Some(ticks)) = (boot, ticks) {
        // Exact: the same boot and the same start.
        return if proc::boot_id().as_deref() == Some(boot) && process.start_ticks == ticks {
            Liveness::Alive
        } else {
            Liveness::Gone
        };
    }
    // A lock that records only when it was taken: a process that started after that (with
    // a second's slack for the clocks' rounding) cannot have taken it.
    let since = value.get("since_unix").and_then(|s| s.as_u64());
    match (since, proc::start_unix(&process)) {
        (Some(since), Some(start)) if start > since.saturating_add(2) => Liveness::Gone,
        _ => Liveness::Alive,
    }
}

/// Deletes the lock of folder `dir` (a URL) through the deletion gate, returning who held
/// it, if anyone. Without `force`, refuses while its holder runs on this host.
pub(crate) fn break_lock(
    inner: &Arc<Inner>,
    dir: &str,
    force: bool,
) -> Result<Option<String>, Error> {
    let dir_key = inner.bucket.key_of(dir)?;
    let key = lock_key(&dir_key);
    let name = inner.bucket.name(&key);
    let content = match crate::get_small(inner, &name, &key) {
        Ok(content) => content,
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let holder = describe(&content);
    let folder = inner.bucket.name(&dir_key).trim_end_matches('/').to_owned();
    let refuse = |why: String| Error::Io {
        action: "break the lock of",
        path: folder.clone().into(),
        source: io::Error::new(io::ErrorKind::ResourceBusy, why),
    };
    if !force {
        match liveness(&content) {
            Liveness::Alive => {
                return Err(refuse(format!(
                    "its holder, {holder}, is alive on this host: stop that process first, or break the lock anyway with `ckpt unlock --force {folder}`"
                )))
            }
            Liveness::Unknown => {
                return Err(refuse(format!(
                    "cannot tell whether its holder, {holder}, still runs on this host (no /proc): make sure it has stopped, then break the lock with `ckpt unlock --force {folder}`"
                )))
            }
            Liveness::Gone | Liveness::Elsewhere => {}
        }
    }
    let storage = ObjectStorage {
        inner: inner.clone(),
    };
    gate::delete(
        &storage,
        &Name::from(name.as_str()),
        gate::Claim::Lock { holder: &content },
    )?;
    Ok(Some(holder))
}

/// What `/proc` says of processes (Linux).
mod proc {
    /// A running process: when it started, in clock ticks since boot.
    pub struct Process {
        pub start_ticks: u64,
    }

    pub fn available() -> bool {
        std::path::Path::new("/proc/self/stat").exists()
    }

    /// The process `pid`, if it runs (a zombie has ended).
    pub fn process(pid: u32) -> Option<Process> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state …`: the name may hold spaces and parentheses.
        let (_, rest) = stat.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if matches!(fields.first(), Some(&"Z" | &"X" | &"x")) {
            return None;
        }
        // Field 22 of the line, `starttime`; the state is field 3.
        let start_ticks = fields.get(22 - 3)?.parse().ok()?;
        Some(Process { start_ticks })
    }

    /// This boot's id.
    pub fn boot_id() -> Option<String> {
        let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        Some(id.trim().to_owned()).filter(|id| !id.is_empty())
    }

    /// When `process` started, in Unix seconds.
    pub fn start_unix(process: &Process) -> Option<u64> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let boot: u64 = stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        Some(boot.saturating_add(process.start_ticks / clock_ticks()?))
    }

    #[cfg(unix)]
    fn clock_ticks() -> Option<u64> {
        // SAFETY: sysconf reads a constant of the system; it has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        u64::try_from(ticks).ok().filter(|t| *t > 0)
    }

    #[cfg(not(unix))]
    fn clock_ticks() -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_is_alive_and_a_later_process_with_its_pid_is_not() {
        let me = holder();
        assert_eq!(liveness(me.to_string().as_bytes()), Liveness::Alive);
        let mut reused = me.clone();
        if let Some(ticks) = reused["start_ticks"].as_u64() {
            reused["start_ticks"] = (ticks + 1).into();
            assert_eq!(liveness(reused.to_string().as_bytes()), Liveness::Gone);
        }
        // Only when it was taken: this process started before now.
        let mut old = serde_json::json!({ "host": me["host"], "pid": me["pid"], "since_unix": me["since_unix"] });
        assert_eq!(liveness(old.to_string().as_bytes()), Liveness::Alive);
        // A lock taken before this process started was not taken by it.
        old["since_unix"] = 1_000_000.into();
        assert_eq!(liveness(old.to_string().as_bytes()), Liveness::Gone);
        let elsewhere =
            serde_json::json!({ "host": "another-host", "pid": me["pid"], "since_unix": 0 });
        assert_eq!(
            liveness(elsewhere.to_string().as_bytes()),
            Liveness::Elsewhere
        );
        assert_eq!(liveness(b"not json"), Liveness::Elsewhere);
    }
}
