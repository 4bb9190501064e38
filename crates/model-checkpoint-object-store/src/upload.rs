//! A checkpoint written as one object that appears whole or not at all, with no temporary
//! name.
//!
//! The core hands the bytes over in order, after reserving the head (the length prefix and
//! the header, whose checksums are known only at the end), and gives the head at the commit.
//! S3 lets the parts of a multipart upload go up in any order, so part 0 — the head and the
//! first bytes after it — stays in memory while parts 1, 2 … upload as they fill (a few at
//! once, on the backend's runtime); at the commit part 0 goes up last and the upload is
//! completed. An object smaller than one part is one PUT. Dropping an upload that was not
//! committed aborts it, so an interrupted save leaves no object (a process killed outright
//! leaves an incomplete upload, invisible to readers, for the bucket's lifecycle rule to
//! clear).
//!
//! A save that must not replace (`Commit::CreateNew`, for versions) first claims its name:
//! a small object `.NAME.claim.ckpt-tmp` (never listed) created only if absent, held only
//! for the commit itself. Holding the claim, it checks that the name is still free and then
//! completes the upload (or, for a small object, PUTs it with `If-None-Match: *`), and
//! releases the claim. The claim is needed because object_store 0.14 does not expose a
//! conditional completion of a multipart upload, and because a server may check such a
//! condition without atomicity: SeaweedFS 4.48 let two of sixteen racing completions with
//! `If-None-Match` win, while its conditional PUTs let exactly one. A claim is never
//! broken (see `Claim`).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::Arc;

use model_checkpoint::store::{gate, Commit, Name, PendingObject};
use model_checkpoint::Error;
use object_store::multipart::PartId;
use object_store::path::Path as Key;
use object_store::{MultipartId, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::task::JoinHandle;

use crate::errors::remote;
use crate::Inner;

type PartUpload = JoinHandle<Result<PartId, object_store::Error>>;

/// S3's limits: parts per upload, bytes per part.
const MAX_PARTS: usize = 10_000;
const MAX_PART: usize = 5 << 30;

pub(crate) struct Upload {
    inner: Arc<Inner>,
    name: String,
    key: Key,
    commit: Commit,
    head_len: usize,
    /// Part 0: the reserved head (zeros until the commit) and the first bytes after it.
    first: Vec<u8>,
    /// The part being filled after part 0.
    current: Vec<u8>,
    /// The multipart upload, once a part beyond part 0 was needed: its key and id.
    multipart: Option<(Key, MultipartId)>,
    /// Parts 1, 2 … in order: finished ids, then uploads still running.
    finished: Vec<PartId>,
    running: VecDeque<PartUpload>,
    /// The first failure of a part upload, reported by every later write and the commit.
    failed: Option<String>,
}

impl Upload {
    pub fn new(
        inner: Arc<Inner>,
        name: &str,
        key: Key,
        head_len: u64,
        commit: Commit,
    ) -> Result<Self, Error> {
        let head_len = usize::try_from(head_len).map_err(|_| Error::TooLarge {
            what: format!("the header of {name}"),
            reason: format!("{head_len} bytes do not fit in memory"),
        })?;
        let part_size = inner.part_size.max(head_len);
        let mut first = Vec::with_capacity(part_size);
        first.resize(head_len, 0);
        Ok(Upload {
            inner,
            name: name.to_owned(),
            key,
            commit,
            head_len,
            first,
            current: Vec::new(),
            multipart: None,
            finished: Vec::new(),
            running: VecDeque::new(),
            failed: None,
        })
    }

    /// The size of the part being filled: the configured size for the first 1,000 parts,
    /// doubling every 1,000 parts after (at most 5 GiB, S3's limit), so that S3's 10,000
    /// parts hold terabytes while a typical checkpoint keeps equal parts.
    fn part_size(&self) -> usize {
        let index = 1 + self.finished.len() + self.running.len();
        let shift = u32::try_from(index / 1000).unwrap_or(u32::MAX).min(16);
        self.inner
            .part_size
            .checked_shl(shift)
            .unwrap_or(MAX_PART)
            .min(MAX_PART)
    }

    /// Starts uploading the filled `current` part (starting the multipart upload first),
    /// waiting for the oldest running part when enough are in flight.
    fn send_current(&mut self) -> io::Result<()> {
        if let Some(reason) = &self.failed {
            return Err(io::Error::other(reason.clone()));
        }
        if self.multipart.is_none() {
            let key = self.key.clone();
            let store = self.inner.multipart.clone();
            let id = self
                .inner
                .runtime
                .block_on({
                    let key = key.clone();
                    async move { store.create_multipart(&key).await }
                })
                .map_err(|e| self.fail(e))?;
            self.multipart = Some((key, id));
        }
        while self.running.len() >= self.inner.parts_in_flight {
            self.finish_oldest()?;
        }
        let Some((key, id)) = self.multipart.clone() else {
            return Err(io::Error::other("no multipart upload"));
        };
        let index = 1 + self.finished.len() + self.running.len();
        if index >= MAX_PARTS {
            return Err(self.fail_with(format!(
                "more than {MAX_PARTS} parts: too large for one S3 object"
            )));
        }
        let part_size = self.part_size();
        let bytes = std::mem::replace(&mut self.current, Vec::with_capacity(part_size));
        let store = self.inner.multipart.clone();
        let task = self.inner.runtime.handle().spawn(async move {
            store
                .put_part(&key, &id, index, PutPayload::from(bytes))
                .await
        });
        self.running.push_back(task);
        Ok(())
    }

    /// Waits for the oldest running part.
    fn finish_oldest(&mut self) -> io::Result<()> {
        let Some(task) = self.running.pop_front() else {
            return Ok(());
        };
        match self.inner.runtime.block_on(task) {
            Ok(Ok(part)) => {
                self.finished.push(part);
                Ok(())
            }
            Ok(Err(e)) => Err(self.fail(e)),
            Err(join) => Err(self.fail_with(format!("a part upload stopped: {join}"))),
        }
    }

    fn fail(&mut self, e: object_store::Error) -> io::Error {
        let error = remote(&self.inner, "upload", &self.name, e);
        self.fail_with(error.to_string())
    }

    fn fail_with(&mut self, reason: String) -> io::Error {
        self.failed.get_or_insert(reason.clone());
        io::Error::other(reason)
    }

    /// Completes the multipart upload with part 0 uploaded last, and for a save that must
    /// not replace, copies the staging object to its name if that is still free.
    fn complete(&mut self) -> Result<(), Error> {
        if !self.current.is_empty() {
            self.send_current().map_err(|e| self.io_error(e))?;
        }
        let Some((upload_key, id)) = self.multipart.clone() else {
            return Ok(());
        };
        let first = std::mem::take(&mut self.first);
        let store = self.inner.multipart.clone();
        let part0 = self.inner.runtime.block_on({
            let (key, id) = (upload_key.clone(), id.clone());
            async move { store.put_part(&key, &id, 0, PutPayload::from(first)).await }
        });
        let part0 = part0.map_err(|e| remote(&self.inner, "upload", &self.name, e))?;
        while !self.running.is_empty() {
            self.finish_oldest().map_err(|e| self.io_error(e))?;
        }
        let mut parts = Vec::with_capacity(1 + self.finished.len());
        parts.push(part0);
        parts.append(&mut self.finished);
        let _claim = match self.commit {
            Commit::Replace => None,
            Commit::CreateNew => Some(self.claim()?),
        };
        let store = self.inner.multipart.clone();
        self.inner
            .runtime
            .block_on({
                let (key, id) = (upload_key.clone(), id.clone());
                async move { store.complete_multipart(&key, &id, parts).await }
            })
            .map_err(|e| remote(&self.inner, "complete the upload of", &self.name, e))?;
        // Completed: nothing to abort any more.
        self.multipart = None;
        Ok(())
    }

    /// Claims the name for a commit that must not replace, and checks that it is free.
    fn claim(&self) -> Result<Claim, Error> {
        let claim = Claim::take(&self.inner, &self.key, &self.name)?;
        let objects = self.inner.objects.clone();
        let key = self.key.clone();
        match self
            .inner
            .runtime
            .block_on(async move { objects.head(&key).await })
        {
            Err(object_store::Error::NotFound { .. }) => Ok(claim),
            Ok(_) => Err(Error::AlreadyExists {
                name: self.name.clone(),
            }),
            Err(e) => Err(remote(&self.inner, "look for", &self.name, e)),
        }
    }

    fn io_error(&self, e: io::Error) -> Error {
        Error::Io {
            action: "upload",
            path: self.name.clone().into(),
            source: e,
        }
    }
}

/// A writer's hold on a name while it commits (see the module's documentation), released
/// when dropped. Claims are never broken: nobody can tell a slow writer from a dead one
/// without trusting clocks. A writer killed inside its commit leaves its claim, and the name
/// stays taken (`Storage::taken`), so versions move on to the next number.
struct Claim {
    inner: Arc<Inner>,
    key: Key,
    /// What this writer put in it (who, when, which claim of the process): released through
    /// the deletion gate only while it still holds exactly that.
    content: Vec<u8>,
}

impl Claim {
    fn take(inner: &Arc<Inner>, key: &Key, name: &str) -> Result<Claim, Error> {
        static TAKEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let claim = crate::claim_key(key);
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let content = serde_json::json!({
            "claim": crate::names::shorten(name),
            "pid": std::process::id(),
            "since_unix_ns": since.to_string(),
            "n": TAKEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
        .to_string()
        .into_bytes();
        if crate::put_if_absent(inner, name, &claim, &content)? {
            return Ok(Claim {
                inner: inner.clone(),
                key: claim,
                content,
            });
        }
        Err(Error::AlreadyExists {
            name: name.to_owned(),
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let name = self.inner.bucket.name(&self.key);
        let storage = crate::ObjectStorage {
            inner: self.inner.clone(),
        };
        let released = gate::delete(
            &storage,
            &Name::from(name.as_str()),
            gate::Claim::Lock {
                holder: &self.content,
            },
        );
        if let Err(e) = released {
            log::warn!(target: "model_checkpoint", "cannot release the claim {name}: {e}");
        }
    }
}

impl Write for Upload {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(reason) = &self.failed {
            return Err(io::Error::other(reason.clone()));
        }
        let first_size = self.inner.part_size;
        let mut rest = buf;
        while !rest.is_empty() {
            let part_size = self.part_size();
            let (target, full) = if self.first.len() < first_size {
                (&mut self.first, first_size)
            } else {
                (&mut self.current, part_size)
            };
            let take = (full - target.len()).min(rest.len());
            target.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.current.len() >= self.part_size() {
                self.send_current()?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl PendingObject for Upload {
    fn commit(mut self: Box<Self>, head: &[u8], _durable: bool) -> Result<(), Error> {
        // A completed S3 write is durable: there is nothing more to sync.
        if head.len() != self.head_len {
            return Err(self.io_error(io::Error::other(format!(
                "a head of {} bytes was given for {} reserved",
                head.len(),
                self.head_len
            ))));
        }
        if let Some(reason) = &self.failed {
            return Err(self.io_error(io::Error::other(reason.clone())));
        }
        self.first[..self.head_len].copy_from_slice(head);
        if self.multipart.is_some() || self.current.len() >= self.inner.part_size {
            return self.complete();
        }
        let mut bytes = std::mem::take(&mut self.first);
        bytes.append(&mut self.current);
        let (mode, _claim) = match self.commit {
            Commit::Replace => (PutMode::Overwrite, None),
            Commit::CreateNew => (PutMode::Create, Some(self.claim()?)),
        };
        let objects = self.inner.objects.clone();
        let key = self.key.clone();
        let put = self.inner.runtime.block_on(async move {
            objects
                .put_opts(&key, PutPayload::from(bytes), PutOptions::from(mode))
                .await
        });
        match put {
            Ok(_) => Ok(()),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) if self.commit == Commit::CreateNew => Err(Error::AlreadyExists {
                name: self.name.clone(),
            }),
            Err(e) => Err(remote(&self.inner, "upload", &self.name, e)),
        }
    }
}

impl Drop for Upload {
    /// An upload never committed (an error, a panic, a dropped save) is aborted: parts
    /// stop, and the server discards what it holds.
    fn drop(&mut self) {
        for task in self.running.drain(..) {
            task.abort();
        }
        if let Some((key, id)) = self.multipart.take() {
            let store = self.inner.multipart.clone();
            let aborted = self
                .inner
                .runtime
                .block_on(async move { store.abort_multipart(&key, &id).await });
            if let Err(e) = aborted {
                log::warn!(target: "model_checkpoint", "cannot abort the upload of {}: {e}", self.name);
            }
        }
    }
}
