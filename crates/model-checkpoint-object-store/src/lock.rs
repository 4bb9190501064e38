//! The folder lock on object storage: an object `.ckpt.lock` created only if absent
//! (`If-None-Match: *`), holding who took it and when. A second trainer gets
//! [`Error::LockedBy`] naming the holder. S3 has no leases, so a lock whose holder died stays
//! until someone breaks it (`ckpt unlock URL`, or deleting the object); the error says so.

use std::sync::Arc;

use model_checkpoint::store::LOCK_FILE;
use model_checkpoint::Error;
use object_store::path::Path as Key;
use object_store::ObjectStoreExt;

use crate::errors::remote;
use crate::Inner;

/// Held while a trainer writes into the folder; dropping it deletes the lock object (if it
/// is still this holder's).
pub(crate) struct RemoteLock {
    inner: Arc<Inner>,
    key: Key,
    holder: Vec<u8>,
}

impl std::fmt::Debug for RemoteLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteLock")
            .field("key", &self.key)
            .finish()
    }
}

/// Who this process is, as a lock records it.
fn holder() -> serde_json::Value {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "an unknown host".to_owned());
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    serde_json::json!({ "host": host, "pid": std::process::id(), "since_unix": since })
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

/// Takes the lock of folder `dir` (a URL).
pub(crate) fn acquire(inner: &Arc<Inner>, dir: &str) -> Result<RemoteLock, Error> {
    let dir_key = inner.bucket.key(dir)?;
    let key = Key::from_iter(dir_key.parts().chain(std::iter::once(LOCK_FILE.into())));
    let name = inner.bucket.name(&key);
    let content = holder().to_string().into_bytes();
    if crate::put_if_absent(inner, &name, &key, &content)? {
        let lock = RemoteLock {
            inner: inner.clone(),
            key,
            holder: content,
        };
        // A server that ignores `If-None-Match: *` would let a second create succeed too,
        // and every lock, version and claim would be an illusion: refuse to work on it.
        if crate::put_if_absent(inner, &name, &lock.key, &lock.holder)? {
            return Err(Error::BadLocation {
                location: inner.bucket.url(),
                reason: "this server ignores conditional creates (If-None-Match: *): locks and versions would not be exclusive".to_owned(),
            });
        }
        return Ok(lock);
    }
    let existing = crate::get_small(inner, &name, &key).unwrap_or_default();
    Err(Error::LockedBy {
        dir: inner.bucket.name(&dir_key).trim_end_matches('/').to_owned(),
        holder: describe(&existing),
    })
}

impl Drop for RemoteLock {
    fn drop(&mut self) {
        let name = self.inner.bucket.name(&self.key);
        // Only this holder's lock: one broken and taken by another trainer stays.
        match crate::get_small(&self.inner, &name, &self.key) {
            Ok(content) if content == self.holder => {}
            Ok(_) => {
                log::warn!(target: "model_checkpoint", "{name} was broken and taken by another trainer: left to it");
                return;
            }
            Err(e) => {
                log::warn!(target: "model_checkpoint", "cannot release the lock {name} (break it with `ckpt unlock`): {e}");
                return;
            }
        }
        let store = self.inner.objects.clone();
        let key = self.key.clone();
        if let Err(e) = self
            .inner
            .runtime
            .block_on(async move { store.delete(&key).await })
        {
            log::warn!(target: "model_checkpoint", "{}", remote("release the lock", &name, e));
        }
    }
}
