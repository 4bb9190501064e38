//! Ranged reads of one version of an object: the first bytes (length prefix and header) come
//! with the request that opens it, and every later read asks for that same version (by its
//! ETag), so an object replaced while it is read fails to read rather than mixing versions.
//! Reads are served from 8 MiB parts fetched ahead: a read that jumps fetches one part, and
//! each further part a reader reaches in order doubles how many are fetched ahead of it, up
//! to 8 in flight (the parts' requests run at once on the backend's runtime), so that a
//! sequential load runs at a parallel download's speed while a reader that looks at a few
//! KiB fetches one part. A large verified read (a tensor's bytes and their CRC-32) is
//! fetched as 8 parts at once (of at most 8 MiB: more parts beyond 64 MiB, 8 in flight),
//! each written straight into its place and checksummed as it arrives.

use std::io;
use std::sync::Arc;

use model_checkpoint::store::ObjectReader;
use model_checkpoint::Error;
use object_store::path::Path as Key;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};

use crate::errors::remote;
use crate::Inner;

/// What the opening request reads: enough for the length prefix and a typical header.
const OPENING_BYTES: u64 = 256 << 10;
/// The size of each part a reader fetches ahead, and the largest part of a large verified
/// read (which is cut into eight parts up to 64 MiB).
pub const READ_PART: usize = 8 << 20;
const PART: usize = READ_PART;
/// The most parts one reader fetches ahead of the one it is reading.
pub const READ_PARTS_IN_FLIGHT: usize = 8;
const PARTS_IN_FLIGHT: usize = READ_PARTS_IN_FLIGHT;
/// The most bytes of parts fetched ahead of what is read, held by all the readers of one
/// storage together (a sharded checkpoint keeps a reader per shard open): beyond it, a
/// reader fetches only the part it needs.
pub const READ_AHEAD_BUDGET: u64 = 256 << 20;

/// Bytes still free for parts fetched ahead, shared by a storage's readers.
#[derive(Clone)]
pub(crate) struct Budget(Arc<std::sync::atomic::AtomicU64>);

impl Budget {
    pub(crate) fn new(bytes: u64) -> Self {
        Budget(Arc::new(std::sync::atomic::AtomicU64::new(bytes)))
    }

    /// `bytes` of the budget, if that much is free; given back when dropped.
    fn take(&self, bytes: u64) -> Option<Reserved> {
        use std::sync::atomic::Ordering;
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |free| {
                free.checked_sub(bytes)
            })
            .ok()
            .map(|_| Reserved {
                budget: self.clone(),
                bytes,
            })
    }
}

/// Part of a [`Budget`], held while a part fetched ahead waits to be read.
struct Reserved {
    budget: Budget,
    bytes: u64,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.budget
            .0
            .fetch_add(self.bytes, std::sync::atomic::Ordering::AcqRel);
    }
}

pub(crate) struct RemoteReader {
    inner: Arc<Inner>,
    key: Key,
    len: u64,
    e_tag: Option<String>,
    /// The object's first bytes, from the opening request.
    start: Vec<u8>,
    /// The part being read, and the parts fetched after it.
    ahead: std::sync::Mutex<Ahead>,
}

/// A reader's parts: the one being read, and the next ones, contiguous, being fetched.
struct Ahead {
    /// The part reads are served from: its offset and bytes.
    window: (u64, bytes::Bytes),
    /// The parts after it, in order, each a fetch running on the backend's runtime.
    next: std::collections::VecDeque<Part>,
    /// How many parts to keep in flight: 1 after a jump, doubled at each part reached in
    /// order, up to [`PARTS_IN_FLIGHT`].
    depth: usize,
}

/// A part being fetched.
struct Part {
    at: u64,
    task: tokio::task::JoinHandle<Result<bytes::Bytes, object_store::Error>>,
    /// The budget it takes while it waits ahead of the reader (none for the part a read
    /// needs now).
    _reserved: Option<Reserved>,
}

impl Drop for Ahead {
    fn drop(&mut self) {
        for part in &self.next {
            part.task.abort();
        }
    }
}

impl RemoteReader {
    pub fn open(inner: Arc<Inner>, name: &str, key: Key) -> Result<Self, Error> {
        let store = inner.objects.clone();
        let options = GetOptions {
            range: Some(GetRange::Bounded(0..OPENING_BYTES)),
            ..GetOptions::default()
        };
        let opened = inner.runtime.block_on({
            let key = key.clone();
            let endpoint = inner.endpoint.clone();
            async move {
                let result = store.get_opts(&key, options).await?;
                let meta = result.meta.clone();
                let bytes = ranged_bytes(result, OPENING_BYTES, &endpoint).await?;
                Ok::<_, object_store::Error>((meta, bytes))
            }
        });
        let (meta, start) = match opened {
            Ok(found) => found,
            // An empty object has no byte 0 to start a range at: ask for its size instead.
            Err(e) if crate::unsatisfiable(&e) => {
                let store = inner.objects.clone();
                let key = key.clone();
                match inner
                    .runtime
                    .block_on(async move { store.head(&key).await })
                {
                    Ok(head) if head.size == 0 => (head, Default::default()),
                    _ => return Err(remote(&inner, "open", name, e)),
                }
            }
            Err(e) => return Err(remote(&inner, "open", name, e)),
        };
        Ok(RemoteReader {
            inner,
            key,
            len: meta.size,
            e_tag: meta.e_tag,
            start: start.to_vec(),
            ahead: std::sync::Mutex::new(Ahead {
                window: (0, bytes::Bytes::new()),
                next: Default::default(),
                depth: 1,
            }),
        })
    }
}

impl ObjectReader for RemoteReader {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        offset
            .checked_add(buf.len() as u64)
            .filter(|end| *end <= self.len)
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(src) = usize::try_from(offset)
            .ok()
            .and_then(|o| self.start.get(o..o + buf.len()))
        {
            buf.copy_from_slice(src);
            return Ok(());
        }
        let mut ahead = self
            .ahead
            .lock()
            .map_err(|_| io::Error::other("a read of this object panicked"))?;
        let mut filled = 0usize;
        while filled < buf.len() {
            let at = offset + filled as u64;
            let (start, held) = &ahead.window;
            let from = at
                .checked_sub(*start)
                .and_then(|from| usize::try_from(from).ok())
                .filter(|from| *from < held.len());
            if let Some(from) = from {
                let n = (held.len() - from).min(buf.len() - filled);
                buf[filled..filled + n].copy_from_slice(&held[from..from + n]);
                filled += n;
                continue;
            }
            self.next_part(&mut ahead, at)?;
        }
        Ok(())
    }

    fn read_with_crc_at(&self, buf: &mut [u8], offset: u64) -> io::Result<u32> {
        if buf.len() < 2 * PART {
            self.read_exact_at(buf, offset)?;
            return Ok(crc32fast::hash(buf));
        }
        self.read_parts(buf, offset)
    }
}

impl RemoteReader {
    /// Makes the part that starts at `at` (or holds it) the window: the next part fetched
    /// ahead when the reader got there in order, else a fresh fetch; then tops up the parts
    /// in flight.
    fn next_part(&self, ahead: &mut Ahead, at: u64) -> io::Result<()> {
        // Parts wholly before `at` are not wanted.
        while ahead.next.get(1).is_some_and(|second| second.at <= at) {
            if let Some(skipped) = ahead.next.pop_front() {
                skipped.task.abort();
            }
        }
        let window_end = ahead.window.0 + ahead.window.1.len() as u64;
        // The front part is the one wanted only if it holds `at`: a reader that jumped past
        // it (a large read went around the queue) starts afresh rather than walking the
        // queue forward, downloading what it skips.
        let queued = ahead
            .next
            .front()
            .is_some_and(|p| p.at <= at && at < p.at + PART as u64);
        let in_order = queued || (ahead.next.is_empty() && at == window_end && window_end > 0);
        let part = match ahead.next.pop_front() {
            Some(part) if queued => part,
            unwanted => {
                for part in unwanted.into_iter().chain(ahead.next.drain(..)) {
                    part.task.abort();
                }
                self.fetch(at)
            }
        };
        ahead.depth = if in_order {
            (ahead.depth * 2).min(PARTS_IN_FLIGHT)
        } else {
            1
        };
        // Top up: the parts after this one, while fewer than `depth` are in flight and the
        // storage's budget for parts fetched ahead allows.
        let mut last = ahead.next.back().map_or(part.at, |p| p.at);
        while in_order && ahead.next.len() < ahead.depth {
            let after = last + PART as u64;
            if after >= self.len {
                break;
            }
            let Some(reserved) = self.inner.read_ahead.take(PART as u64) else {
                break;
            };
            let mut next = self.fetch(after);
            next._reserved = Some(reserved);
            ahead.next.push_back(next);
            last = after;
        }
        let bytes = self
            .inner
            .runtime
            .block_on(part.task)
            .map_err(|e| io::Error::other(format!("a read of this object failed: {e}")))
            .and_then(|fetched| fetched.map_err(|e| self.read_failed(e)))?;
        if bytes.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        ahead.window = (part.at, bytes);
        Ok(())
    }

    /// Starts fetching the part at `at` (up to [`PART`] bytes, fewer at the object's end) of
    /// the version opened.
    fn fetch(&self, at: u64) -> Part {
        let end = at.saturating_add(PART as u64).min(self.len);
        let store: Arc<dyn ObjectStore> = self.inner.objects.clone();
        let options = GetOptions {
            range: Some(GetRange::Bounded(at..end)),
            if_match: self.e_tag.clone(),
            ..GetOptions::default()
        };
        let key = self.key.clone();
        let endpoint = self.inner.endpoint.clone();
        let task = self.inner.runtime.handle().spawn(async move {
            let result = store.get_opts(&key, options).await?;
            ranged_bytes(result, end - at, &endpoint).await
        });
        Part {
            at,
            task,
            _reserved: None,
        }
    }

    /// `read_with_crc_at` of a large range: its parts fetched at once (a bounded number in
    /// flight, in order), each streamed into its place, checksummed as it comes; the parts'
    /// checksums combined in order.
    fn read_parts(&self, buf: &mut [u8], offset: u64) -> io::Result<u32> {
        offset
            .checked_add(buf.len() as u64)
            .filter(|end| *end <= self.len)
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        // This read goes around the parts fetched ahead: they are not wanted next.
        if let Ok(mut ahead) = self.ahead.lock() {
            for part in ahead.next.drain(..) {
                part.task.abort();
            }
        }
        use futures_util::{StreamExt, TryStreamExt};
        // As many parts as may be in flight, of at most `PART` bytes: a tensor of 32 MiB is
        // eight requests of 4 MiB at once, not four of 8 MiB.
        let part_len = buf.len().div_ceil(PARTS_IN_FLIGHT).clamp(1, PART);
        let parts = buf.chunks_mut(part_len).scan(offset, |at, part| {
            let from = *at;
            *at += part.len() as u64;
            Some((from, part))
        });
        let fetches = parts.map(|(from, part)| {
            let store: Arc<dyn ObjectStore> = self.inner.objects.clone();
            let options = GetOptions {
                range: Some(GetRange::Bounded(from..from + part.len() as u64)),
                if_match: self.e_tag.clone(),
                ..GetOptions::default()
            };
            let key = self.key.clone();
            let endpoint = self.inner.endpoint.clone();
            async move {
                let result = store.get_opts(&key, options).await?;
                ranged_into(result, part, &endpoint).await
            }
        });
        let hashers: Vec<crc32fast::Hasher> = self
            .inner
            .runtime
            .block_on(
                futures_util::stream::iter(fetches)
                    .buffered(PARTS_IN_FLIGHT)
                    .try_collect(),
            )
            .map_err(|e| self.read_failed(e))?;
        let mut crc = crc32fast::Hasher::new();
        for part in &hashers {
            crc.combine(part);
        }
        Ok(crc.finalize())
    }

    fn read_failed(&self, e: object_store::Error) -> io::Error {
        match e {
            object_store::Error::Precondition { .. } => {
                io::Error::other("the object was replaced while it was being read")
            }
            e => crate::errors::io(&self.inner, e),
        }
    }
}

/// The body of a ranged read, streamed into `part` and checksummed as it comes: refused
/// when the server sends more than `part` holds, short when it sends less.
async fn ranged_into(
    result: object_store::GetResult,
    part: &mut [u8],
    endpoint: &str,
) -> Result<crc32fast::Hasher, object_store::Error> {
    use futures_util::StreamExt;
    let mut stream = result.into_stream();
    let mut hasher = crc32fast::Hasher::new();
    let mut filled = 0usize;
    while let Some(piece) = stream.next().await {
        let piece = piece?;
        let Some(dst) = part.get_mut(filled..filled + piece.len()) else {
            return Err(too_long(part.len() as u64, endpoint));
        };
        dst.copy_from_slice(&piece);
        hasher.update(&piece);
        filled += piece.len();
    }
    if filled != part.len() {
        return Err(object_store::Error::Generic {
            store: "S3",
            source: Box::new(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{endpoint} sent {filled} bytes of a range of {}",
                    part.len()
                ),
            )),
        });
    }
    Ok(hasher)
}

/// A body longer than the `bound` bytes asked for, named.
fn too_long(bound: u64, endpoint: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "S3",
        source: Box::new(crate::http::Stopped {
            endpoint: endpoint.to_owned(),
            reason: crate::http::Reason::TooLong {
                bound,
                what: crate::http::Expected::Range(bound),
            },
        }),
    }
}

/// The body of a ranged read of `len` bytes (fewer at the object's end), refused when the
/// server sends more: the HTTP client cuts such a body a little past the range (see
/// `http.rs`), and this names it.
pub(crate) async fn ranged_bytes(
    result: object_store::GetResult,
    len: u64,
    endpoint: &str,
) -> Result<bytes::Bytes, object_store::Error> {
    use futures_util::StreamExt;
    let mut stream = result.into_stream();
    let mut bytes = Vec::with_capacity(usize::try_from(len.min(64 << 20)).unwrap_or(0));
    while let Some(piece) = stream.next().await {
        let piece = piece?;
        if (bytes.len() + piece.len()) as u64 > len {
            return Err(too_long(len, endpoint));
        }
        bytes.extend_from_slice(&piece);
    }
    Ok(bytes.into())
}
