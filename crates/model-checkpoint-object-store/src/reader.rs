//! Ranged reads of one version of an object: the first bytes (length prefix and header) come
//! with the request that opens it, and every later read asks for that same version (by its
//! ETag), so an object replaced while it is read fails to read rather than mixing versions.

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

pub(crate) struct RemoteReader {
    inner: Arc<Inner>,
    key: Key,
    len: u64,
    e_tag: Option<String>,
    /// The object's first bytes, from the opening request.
    start: Vec<u8>,
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
            async move {
                let result = store.get_opts(&key, options).await?;
                let meta = result.meta.clone();
                let bytes = result.bytes().await?;
                Ok::<_, object_store::Error>((meta, bytes))
            }
        });
        let (meta, start) = match opened {
            Ok(found) => found,
            Err(e @ object_store::Error::NotFound { .. }) => return Err(remote("open", name, e)),
            // An empty object has no byte 0 to start a range at: ask for its size instead.
            Err(e) => {
                let store = inner.objects.clone();
                let key = key.clone();
                match inner
                    .runtime
                    .block_on(async move { store.head(&key).await })
                {
                    Ok(head) if head.size == 0 => (head, Default::default()),
                    _ => return Err(remote("open", name, e)),
                }
            }
        };
        Ok(RemoteReader {
            inner,
            key,
            len: meta.size,
            e_tag: meta.e_tag,
            start: start.to_vec(),
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
        let store: Arc<dyn ObjectStore> = self.inner.objects.clone();
        let options = GetOptions {
            range: Some(GetRange::Bounded(offset..end)),
            if_match: self.e_tag.clone(),
            ..GetOptions::default()
        };
        let key = self.key.clone();
        let bytes = self
            .inner
            .runtime
            .block_on(async move { store.get_opts(&key, options).await?.bytes().await })
            .map_err(|e| match e {
                object_store::Error::Precondition { .. } => {
                    io::Error::other("the object was replaced while it was being read")
                }
                e => io::Error::other(e),
            })?;
        if bytes.len() != buf.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.copy_from_slice(&bytes);
        Ok(())
    }
}
