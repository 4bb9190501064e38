//! Ranged reads of one version of an object: the first bytes (length prefix and header) come
//! with the request that opens it, and every later read asks for that same version (by its
//! ETag), so an object replaced while it is read fails to read rather than mixing versions.
//! Small reads are served from a read-ahead window (one GET of at least 8 MiB), so that a
//! reader that grows its reads from a few KiB does not make a request for each.

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
/// The least a read past the window fetches.
const READ_AHEAD: u64 = 8 << 20;

pub(crate) struct RemoteReader {
    inner: Arc<Inner>,
    key: Key,
    len: u64,
    e_tag: Option<String>,
    /// The object's first bytes, from the opening request.
    start: Vec<u8>,
    /// The last window fetched: its offset and bytes.
    window: std::sync::Mutex<(u64, bytes::Bytes)>,
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
            window: std::sync::Mutex::new((0, bytes::Bytes::new())),
        })
    }
}

impl ObjectReader for RemoteReader {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
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
        let mut window = self
            .window
            .lock()
            .map_err(|_| io::Error::other("a read of this object panicked"))?;
        let (start, held) = &*window;
        let from = offset
            .checked_sub(*start)
            .and_then(|from| usize::try_from(from).ok());
        if let Some(src) = from.and_then(|from| held.get(from..from.checked_add(buf.len())?)) {
            buf.copy_from_slice(src);
            return Ok(());
        }
        // Large reads go straight; small ones fetch a window for the reads after them.
        let fetch_end = end.max(offset.saturating_add(READ_AHEAD)).min(self.len);
        let store: Arc<dyn ObjectStore> = self.inner.objects.clone();
        let options = GetOptions {
            range: Some(GetRange::Bounded(offset..fetch_end)),
            if_match: self.e_tag.clone(),
            ..GetOptions::default()
        };
        let key = self.key.clone();
        let endpoint = self.inner.endpoint.clone();
        let bytes = self
            .inner
            .runtime
            .block_on(async move {
                let result = store.get_opts(&key, options).await?;
                ranged_bytes(result, fetch_end - offset, &endpoint).await
            })
            .map_err(|e| match e {
                object_store::Error::Precondition { .. } => {
                    io::Error::other("the object was replaced while it was being read")
                }
                e => crate::errors::io(&self.inner, e),
            })?;
        let wanted = bytes.get(..buf.len()).ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(wanted);
        if bytes.len() > buf.len() {
            *window = (offset, bytes);
        }
        Ok(())
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
            return Err(object_store::Error::Generic {
                store: "S3",
                source: Box::new(crate::http::Stopped {
                    endpoint: endpoint.to_owned(),
                    reason: crate::http::Reason::TooLong {
                        bound: len,
                        what: crate::http::Expected::Range(len),
                    },
                }),
            });
        }
        bytes.extend_from_slice(&piece);
    }
    Ok(bytes.into())
}
