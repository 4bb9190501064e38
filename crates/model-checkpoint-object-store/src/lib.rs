//! Checkpoints on S3 and S3-compatible servers (MinIO, SeaweedFS, R2 …): the core's
//! [`Storage`] on the [`object_store`] crate, with the same guarantees as a local folder.
//!
//! - **An object appears whole or not at all**, with no temporary name: a multipart upload
//!   whose first part (the header, with its checksums) goes up last, or one PUT for a small
//!   file (see `upload.rs`). An interrupted save is aborted and leaves no object.
//! - **Every read verifies**: the core checks each tensor's CRC-32 on the bytes handed out,
//!   and a reader only ever sees one version of an object (ranged reads pinned to its ETag).
//! - **Versions and the folder lock use conditional creates** (`If-None-Match: *`): of
//!   several writers racing for one name exactly one wins. `save_last` is a server-side
//!   copy; retention deletes only after the newer object is complete; `latest` lists and
//!   falls back past damage as on a folder.
//! - **Credentials the standard way**: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//!   `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL` (an S3-compatible server) and
//!   `AWS_ALLOW_HTTP=true` (a server on plain `http://`). Wrong credentials, a missing
//!   bucket or an unreachable endpoint are one-line errors saying what to check.
//! - **Every request has deadlines and every reply a size bound** ([`limits`]): 5 s to
//!   connect, 15 s to the first byte of the reply (plus 1 s per 64 KiB uploaded), 15 s at
//!   most between two pieces of a reply, 60 s for the whole request plus 1 s per 64 KiB sent
//!   or received; a ranged read takes at most its length plus 64 KiB, any other reply
//!   16 MiB, an error reply is cut at 64 KiB, and a listing stops with an error past 1,000
//!   pages or 262,144 objects. Transient errors are retried with backoff while less than
//!   10 s have passed (at most 4 retries). An endpoint that accepts connections and never
//!   answers fails in 15 s, and is then not asked again for 30 s, so that a command fails in
//!   the time of one request; one that sends without end fails at the bound, never by
//!   running out of memory.
//!
//! ```no_run
//! use std::sync::Arc;
//! use model_checkpoint::ModelCheckpoint;
//! use model_checkpoint_object_store::ObjectStorage;
//!
//! let url = "s3://my-bucket/run-7/w.{epoch:02d}.safetensors";
//! let storage = ObjectStorage::from_env(url)?;
//! let checkpoint = ModelCheckpoint::new(url).storage(Arc::new(storage));
//! # Ok::<(), model_checkpoint::Error>(())
//! ```
//!
//! Names the core hands over are the formatted paths of the template (`s3://bucket/key`);
//! this backend maps them to keys of its one bucket and lists them back in the same
//! spelling.

mod errors;
mod http;
pub mod limits;
mod listing;
mod lock;
mod names;
mod reader;
pub use reader::{READ_AHEAD_BUDGET, READ_PART, READ_PARTS_IN_FLIGHT};
mod runtime;
mod upload;

use std::sync::Arc;
use std::time::Duration;

use model_checkpoint::store::{
    Commit, Name, ObjectMeta, ObjectReader, PendingObject, Storage, LOCK_FILE, TEMP_SUFFIX,
};
use model_checkpoint::Error;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::list::PaginatedListStore;
use object_store::multipart::MultipartStore;
use object_store::path::Path as Key;
use object_store::{
    ClientConfigKey, ObjectStore, ObjectStoreExt, PutMode, PutOptions, RetryConfig,
};

use errors::remote;
use names::Bucket;

/// The URL schemes this build serves.
pub const SCHEMES: &[&str] = &[
    "s3",
    "s3a",
    #[cfg(feature = "gcp")]
    "gs",
    #[cfg(feature = "azure")]
    "az",
];

/// The size of each part of a multipart upload: S3 wants at least 5 MiB (but the last).
pub const DEFAULT_PART_SIZE: usize = 16 << 20;
/// How many parts upload at once while later bytes are produced.
pub const DEFAULT_PARTS_IN_FLIGHT: usize = 4;

/// Whether `location` is a URL this crate serves (`s3://…`), rather than a local path.
pub fn is_remote(location: &str) -> bool {
    location
        .split_once("://")
        .is_some_and(|(scheme, _)| SCHEMES.contains(&scheme))
}

/// What the storage and its open readers, uploads and locks share.
pub(crate) struct Inner {
    objects: Arc<dyn ObjectStore>,
    multipart: Arc<dyn MultipartStore>,
    /// The same store's page-by-page listing, where it has one (S3, GCS): listings are then
    /// bounded in pages too (see `listing.rs`).
    pages: Option<Arc<dyn PaginatedListStore>>,
    /// Where requests go, for messages: `AWS_ENDPOINT_URL`, or the service's name.
    endpoint: String,
    runtime: runtime::Runtime,
    bucket: Bucket,
    part_size: usize,
    parts_in_flight: usize,
    /// Bytes that readers of this storage may hold in parts fetched ahead of what they
    /// read, all readers together (see `reader.rs`).
    read_ahead: reader::Budget,
}

/// Checkpoints in one bucket of an object store (see the crate's documentation).
#[derive(Clone)]
pub struct ObjectStorage {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStorage")
            .field("bucket", &self.inner.bucket.url())
            .field("part_size", &self.inner.part_size)
            .field("parts_in_flight", &self.inner.parts_in_flight)
            .finish_non_exhaustive()
    }
}

impl ObjectStorage {
    /// The bucket of `url` (`s3://bucket/anything`), with the client configured from the
    /// `AWS_*` environment variables (see the crate's documentation). With the `gcp` or
    /// `azure` features, `gs://bucket` and `az://container` are configured from the
    /// variables object_store reads for those (`GOOGLE_*`, `AZURE_*`).
    ///
    /// # Errors
    ///
    /// [`Error::BadLocation`] for a URL that is not `s3://bucket/…`, or a configuration the
    /// client refuses.
    pub fn from_env(url: &str) -> Result<Self, Error> {
        Self::from_env_with(url, &[])
    }

    /// Like [`ObjectStorage::from_env`], with `overrides` (the same `AWS_*` names, such as
    /// `AWS_ENDPOINT_URL`) applied over the environment: for a program that configures
    /// several stores, or a test that must not change its process's environment.
    ///
    /// # Errors
    ///
    /// As [`ObjectStorage::from_env`], and [`Error::BadLocation`] for an unknown name.
    pub fn from_env_with(url: &str, overrides: &[(&str, &str)]) -> Result<Self, Error> {
        let (bucket, _) = names::parse_url(url)?;
        // reqwest is built without a default TLS provider (no aws-lc C build): use ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let retry = RetryConfig {
            max_retries: limits::MAX_RETRIES,
            retry_timeout: limits::RETRY_TIMEOUT,
            ..RetryConfig::default()
        };
        let connect_timeout = format!("{}s", limits::CONNECT_TIMEOUT.as_secs());
        let refused = |e: object_store::Error| Error::BadLocation {
            location: names::shorten(url),
            reason: format!(
                "the client cannot be configured: {}",
                names::shorten(
                    &e.to_string()
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            ),
        };
        #[cfg(feature = "gcp")]
        if bucket.scheme == "gs" {
            // GOOGLE_SERVICE_ACCOUNT, GOOGLE_BUCKET … as object_store reads them.
            let gcs = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(&bucket.name)
                .with_config(
                    object_store::gcp::GoogleConfigKey::Client(ClientConfigKey::ConnectTimeout),
                    &connect_timeout,
                )
                .with_retry(retry)
                .with_http_connector(http::BoundedConnector)
                .build()
                .map_err(refused)?;
            let gcs = Arc::new(gcs);
            return Self::build(
                gcs.clone(),
                gcs.clone(),
                Some(gcs),
                "Google Cloud Storage".to_owned(),
                url,
            );
        }
        #[cfg(feature = "azure")]
        if bucket.scheme == "az" {
            // AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY … as object_store reads them.
            let azure = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(&bucket.name)
                .with_config(
                    object_store::azure::AzureConfigKey::Client(ClientConfigKey::ConnectTimeout),
                    &connect_timeout,
                )
                .with_retry(retry)
                .with_http_connector(http::BoundedConnector)
                .build()
                .map_err(refused)?;
            let azure = Arc::new(azure);
            return Self::build(
                azure.clone(),
                azure,
                None,
                "Azure Blob Storage".to_owned(),
                url,
            );
        }
        let mut builder = AmazonS3Builder::from_env();
        for (name, value) in overrides {
            let key: AmazonS3ConfigKey =
                name.to_ascii_lowercase()
                    .parse()
                    .map_err(|_| Error::BadLocation {
                        location: names::shorten(url),
                        reason: format!("{name} is not an S3 setting"),
                    })?;
            builder = builder.with_config(key, *value);
        }
        let endpoint = match builder.get_config_value(&AmazonS3ConfigKey::Endpoint) {
            Some(given) => checked_endpoint(
                given.trim_end_matches('/'),
                "AWS_ENDPOINT_URL (or AWS_ENDPOINT)",
            ),
            None => {
                let region = builder
                    .get_config_value(&AmazonS3ConfigKey::Region)
                    .unwrap_or_else(|| "us-east-1".to_owned());
                checked_endpoint(&format!("https://s3.{region}.amazonaws.com"), "AWS_REGION")
            }
        }
        .map_err(|reason| Error::BadLocation {
            location: names::shorten(url),
            reason,
        })?;
        let s3 = builder
            .with_bucket_name(&bucket.name)
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                &connect_timeout,
            )
            .with_retry(retry)
            .with_http_connector(http::BoundedConnector)
            .build()
            .map_err(refused)?;
        let s3 = Arc::new(s3);
        Self::build(s3.clone(), s3.clone(), Some(s3), endpoint, url)
    }

    /// The bucket of `url` served by a store of the caller's making (configured as they
    /// like, or `object_store::memory::InMemory` in tests).
    ///
    /// # Errors
    ///
    /// [`Error::BadLocation`] for a URL that is not `s3://bucket/…`; [`Error::Io`] when the
    /// runtime cannot start.
    pub fn with_store(
        objects: Arc<dyn ObjectStore>,
        multipart: Arc<dyn MultipartStore>,
        url: &str,
    ) -> Result<Self, Error> {
        Self::build(
            objects,
            multipart,
            None,
            "(a store of the caller's)".to_owned(),
            url,
        )
    }

    fn build(
        objects: Arc<dyn ObjectStore>,
        multipart: Arc<dyn MultipartStore>,
        pages: Option<Arc<dyn PaginatedListStore>>,
        endpoint: String,
        url: &str,
    ) -> Result<Self, Error> {
        let (bucket, _) = names::parse_url(url)?;
        let runtime = runtime::Runtime::new().map_err(|e| Error::Io {
            action: "start the runtime for",
            path: bucket.url().into(),
            source: e,
        })?;
        Ok(ObjectStorage {
            inner: Arc::new(Inner {
                objects,
                multipart,
                pages,
                endpoint,
                runtime,
                bucket,
                part_size: DEFAULT_PART_SIZE,
                parts_in_flight: DEFAULT_PARTS_IN_FLIGHT,
                read_ahead: reader::Budget::new(READ_AHEAD_BUDGET),
            }),
        })
    }

    /// Sets the part size of multipart uploads (at least 5 MiB) and how many parts upload
    /// at once (at least 1). Memory held by an upload is about `part_size × (in_flight + 2)`.
    /// Call it before cloning the storage (or handing it to a callback): clones share their
    /// settings, and a shared storage is returned unchanged.
    pub fn with_parts(self, part_size: usize, in_flight: usize) -> Self {
        let mut inner = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner,
            Err(shared) => return ObjectStorage { inner: shared },
        };
        inner.part_size = part_size.max(5 << 20);
        inner.parts_in_flight = in_flight.max(1);
        ObjectStorage {
            inner: Arc::new(inner),
        }
    }

    /// The bucket's URL, `s3://bucket`.
    pub fn url(&self) -> String {
        self.inner.bucket.url()
    }

    /// Deletes the folder lock of `dir` (a URL), returning who held it, if anyone: what
    /// `ckpt unlock` does for a lock whose holder died. The delete goes through the core's
    /// deletion gate: a lock taken by someone else since it was read stays.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the lock cannot be read or deleted, or when its holder is a process
    /// alive on this host (a pid that runs and started before the lock was taken; on a
    /// system without `/proc`, any holder of this host): stop it first, or use
    /// [`ObjectStorage::force_break_lock`]. [`Error::NotOurs`] when the lock changed
    /// holder since it was read.
    pub fn break_lock(&self, dir: &str) -> Result<Option<String>, Error> {
        lock::break_lock(&self.inner, dir, false)
    }

    /// [`ObjectStorage::break_lock`] even when its holder runs on this host (`ckpt unlock
    /// --force`): that process may then write beside the next one.
    ///
    /// # Errors
    ///
    /// As [`ObjectStorage::break_lock`], but for a live holder.
    pub fn force_break_lock(&self, dir: &str) -> Result<Option<String>, Error> {
        lock::break_lock(&self.inner, dir, true)
    }

    /// Uploads `pieces` as one object with object_store's own `WriteMultipart`, with this
    /// storage's part size and parts in flight: no header, no checksums, no commit protocol.
    /// The baseline `ckpt bench --only s3-save-vs-multipart` compares a save against.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the upload fails.
    pub fn plain_multipart_upload(&self, name: &str, pieces: &[&[u8]]) -> Result<(), Error> {
        let key = self.inner.bucket.key_of(name)?;
        let store = self.inner.objects.clone();
        let (part_size, in_flight) = (self.inner.part_size, self.inner.parts_in_flight);
        self.inner
            .runtime
            .block_on(async move {
                let upload = store.put_multipart(&key).await?;
                let mut writer =
                    object_store::WriteMultipart::new_with_chunk_size(upload, part_size);
                for piece in pieces {
                    writer.wait_for_capacity(in_flight).await?;
                    writer.write(piece);
                }
                writer.finish().await.map(|_| ())
            })
            .map_err(|e| remote(&self.inner, "upload", name, e))
    }

    /// Downloads object `name` whole with object_store alone: its size, then ranged GETs of
    /// `part` bytes, `in_flight` at once, gathered in order into memory, nothing checked.
    /// The baseline `ckpt bench --only s3-load-vs-download` compares a verified load against.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when a request fails.
    pub fn plain_parallel_download(
        &self,
        name: &str,
        part: u64,
        in_flight: usize,
    ) -> Result<Vec<u8>, Error> {
        use futures_util::{StreamExt, TryStreamExt};
        let key = self.inner.bucket.key_of(name)?;
        let store = self.inner.objects.clone();
        let part = part.max(1);
        self.inner
            .runtime
            .block_on(async move {
                let size = store.head(&key).await?.size;
                let ranges = (0..size.div_ceil(part)).map(|i| {
                    i.saturating_mul(part)..i.saturating_add(1).saturating_mul(part).min(size)
                });
                let mut parts = futures_util::stream::iter(ranges.map(|range| {
                    let (store, key) = (store.clone(), key.clone());
                    async move { store.get_range(&key, range).await }
                }))
                .buffered(in_flight.max(1));
                // The size is the server's: memory for it is asked for, never assumed.
                let mut bytes = Vec::new();
                bytes
                    .try_reserve_exact(usize::try_from(size).unwrap_or(usize::MAX))
                    .map_err(|e| object_store::Error::Generic {
                        store: "S3",
                        source: Box::new(e),
                    })?;
                while let Some(piece) = parts.try_next().await? {
                    bytes.extend_from_slice(&piece);
                }
                Ok::<_, object_store::Error>(bytes)
            })
            .map_err(|e| remote(&self.inner, "download", name, e))
    }

    fn key(&self, name: &Name) -> Result<Key, Error> {
        self.inner.bucket.key(name)
    }
}

/// Creates `key` with `bytes` only if absent; `Ok(false)` when it exists.
pub(crate) fn put_if_absent(
    inner: &Inner,
    name: &str,
    key: &Key,
    bytes: &[u8],
) -> Result<bool, Error> {
    for attempt in 0..4u32 {
        let store = inner.objects.clone();
        let target = key.clone();
        let payload = bytes.to_vec();
        let put = inner.runtime.block_on(async move {
            store
                .put_opts(&target, payload.into(), PutOptions::from(PutMode::Create))
                .await
        });
        match put {
            Ok(_) => return Ok(true),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => {}
            Err(e) => return Err(remote(inner, "create", name, e)),
        }
        // Taken, or a conflict with a concurrent conditional write (S3's 409, which
        // object_store reports as "already exists"): taken only if something is there.
        let store = inner.objects.clone();
        let probe = key.clone();
        match inner
            .runtime
            .block_on(async move { store.head(&probe).await })
        {
            Ok(_) => return Ok(false),
            Err(object_store::Error::NotFound { .. }) => {
                std::thread::sleep(Duration::from_millis(50 << attempt));
            }
            Err(e) => return Err(remote(inner, "look for", name, e)),
        }
    }
    // Refused each time, with nothing there: not "taken" (a lock would be reported held
    // by someone, and `ckpt unlock` would find nothing to break).
    Err(Error::Io {
        action: "create",
        path: names::shorten(name).into(),
        source: std::io::Error::other(format!(
            "the endpoint {} refused to create it four times (as if it existed), yet has nothing there: check that AWS_ENDPOINT_URL names an S3 server",
            inner.endpoint
        )),
    })
}

/// Where a claim for `key` lives: `.NAME.claim.ckpt-tmp` beside it (never listed).
pub(crate) fn claim_key(key: &Key) -> Key {
    let file = key.filename().unwrap_or("checkpoint");
    let parts: Vec<_> = key.parts().collect();
    let mut claim = parts[..parts.len().saturating_sub(1)].to_vec();
    let name = format!(".{file}.claim{TEMP_SUFFIX}");
    claim.push(name.as_str().into());
    Key::from_iter(claim)
}

/// The largest object a single server-side copy takes (S3's CopyObject limit).
const MAX_SINGLE_COPY: u64 = 5 << 30;

/// At most the first 4 KiB of a small object (a lock): never more, whatever was planted.
pub(crate) fn get_small(inner: &Inner, name: &str, key: &Key) -> Result<Vec<u8>, Error> {
    let store = inner.objects.clone();
    let target = key.clone();
    let options = object_store::GetOptions {
        range: Some(object_store::GetRange::Bounded(0..4096)),
        ..Default::default()
    };
    let endpoint = inner.endpoint.clone();
    let read = inner.runtime.block_on(async move {
        let result = store.get_opts(&target, options).await?;
        reader::ranged_bytes(result, 4096, &endpoint).await
    });
    match read {
        Ok(bytes) => Ok(bytes.to_vec()),
        // An empty object has no byte 0 to start a range at.
        Err(e) if unsatisfiable(&e) => {
            let store = inner.objects.clone();
            let target = key.clone();
            match inner
                .runtime
                .block_on(async move { store.head(&target).await })
            {
                Ok(meta) if meta.size == 0 => Ok(Vec::new()),
                _ => Err(remote(inner, "read", name, e)),
            }
        }
        Err(e) => Err(remote(inner, "read", name, e)),
    }
}

/// Whether `e` is the server's 416 answer to a range that starts past the end: what a
/// ranged read of an empty object gets. Only then is the object's size asked separately;
/// any other failure (a timeout above all) is reported as it is.
pub(crate) fn unsatisfiable(e: &object_store::Error) -> bool {
    e.to_string().contains("status code: 416")
}

/// Whether an object's name is one the tool manages but never lists: the lock and the
/// staging objects of conditional saves.
fn internal(key: &Key) -> bool {
    key.filename()
        .is_some_and(|f| f == LOCK_FILE || f.ends_with(TEMP_SUFFIX))
}

impl Storage for ObjectStorage {
    fn create(
        &self,
        name: &Name,
        head_len: u64,
        commit: Commit,
    ) -> Result<Box<dyn PendingObject>, Error> {
        let key = self.key(name)?;
        if key.as_ref().is_empty() {
            return Err(Error::IsADirectory { path: name.clone() });
        }
        Ok(Box::new(upload::Upload::new(
            self.inner.clone(),
            name.as_str(),
            key,
            head_len,
            commit,
        )?))
    }

    fn put_if_absent(&self, name: &Name, bytes: &[u8]) -> Result<bool, Error> {
        put_if_absent(&self.inner, name.as_str(), &self.key(name)?, bytes)
    }

    fn open(&self, name: &Name) -> Result<Box<dyn ObjectReader>, Error> {
        let key = self.key(name)?;
        Ok(Box::new(reader::RemoteReader::open(
            self.inner.clone(),
            name.as_str(),
            key,
        )?))
    }

    /// Bounded: past [`limits::MAX_LIST_PAGES`] pages or [`limits::MAX_LISTED_OBJECTS`]
    /// objects the listing is an error (see [`limits`]).
    fn list(&self, dir: &Name, depth: usize) -> Result<Vec<ObjectMeta>, Error> {
        let prefix = self.key(dir)?;
        let base = prefix.parts().count();
        // Deeper than asked, the folder's own marker object (`run/`), and the tool's own
        // objects are not listed.
        let keep = |key: &Key| {
            (base + 1..=base + 1 + depth).contains(&key.parts().count()) && !internal(key)
        };
        // One level: the server does not walk (or send) the sub-folders.
        let (listed, _) = listing::objects(
            &self.inner,
            dir.as_str(),
            &prefix,
            depth == 0,
            listing::Bounds::WHOLE,
            keep,
        )?;
        let mut out: Vec<ObjectMeta> = listed
            .into_iter()
            .map(|m| ObjectMeta {
                name: self.inner.bucket.name_of(&m.location),
                size: m.size,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Taken also while a writer holds the name's claim (or left it, killed inside its
    /// commit): versions then move on to the next number.
    fn taken(&self, name: &Name) -> Result<bool, Error> {
        Ok(self.exists(name)? || {
            let claim = claim_key(&self.key(name)?);
            self.exists(&self.inner.bucket.name_of(&claim))?
        })
    }

    fn exists(&self, name: &Name) -> Result<bool, Error> {
        let key = self.key(name)?;
        let store = self.inner.objects.clone();
        match self
            .inner
            .runtime
            .block_on(async move { store.head(&key).await })
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(remote(&self.inner, "look for", name.as_str(), e)),
        }
    }

    /// On object storage, whoever may write the bucket owns its objects: the same as
    /// [`Storage::exists`].
    fn exists_as_own(&self, name: &Name) -> Result<bool, Error> {
        self.exists(name)
    }

    fn delete(&self, name: &Name) -> Result<(), Error> {
        let key = self.key(name)?;
        let store = self.inner.objects.clone();
        match self
            .inner
            .runtime
            .block_on(async move { store.delete(&key).await })
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(remote(&self.inner, "delete", name.as_str(), e)),
        }
    }

    /// A server-side copy: readers of `to` see the old object or the new one. S3 copies at
    /// most 5 GiB in one request; a larger object is streamed through this client instead
    /// (read in 64 MiB ranges, written as a multipart upload that appears whole).
    fn copy(&self, from: &Name, to: &Name, _durable: bool) -> Result<(), Error> {
        let (src, dst) = (self.key(from)?, self.key(to)?);
        let store = self.inner.objects.clone();
        let head = src.clone();
        let size = self
            .inner
            .runtime
            .block_on(async move { store.head(&head).await })
            .map_err(|e| remote(&self.inner, "copy", from.as_str(), e))?
            .size;
        if size <= MAX_SINGLE_COPY {
            let store = self.inner.objects.clone();
            return self
                .inner
                .runtime
                .block_on(async move { store.copy(&src, &dst).await })
                .map_err(|e| remote(&self.inner, "copy", from.as_str(), e));
        }
        let reader = reader::RemoteReader::open(self.inner.clone(), from.as_str(), src)?;
        let mut upload =
            upload::Upload::new(self.inner.clone(), to.as_str(), dst, 0, Commit::Replace)?;
        let mut buffer = vec![0u8; 64 << 20];
        let mut offset = 0u64;
        while offset < reader.len() {
            let n = usize::try_from(reader.len() - offset)
                .map_or(buffer.len(), |left| left.min(buffer.len()));
            let chunk = &mut buffer[..n];
            reader.read_exact_at(chunk, offset).map_err(|e| Error::Io {
                action: "copy",
                path: names::shorten(from.as_str()).into(),
                source: e,
            })?;
            std::io::Write::write_all(&mut upload, chunk).map_err(|e| Error::Io {
                action: "copy to",
                path: names::shorten(to.as_str()).into(),
                source: e,
            })?;
            offset += n as u64;
        }
        PendingObject::commit(Box::new(upload), &[], true)
    }

    /// Object stores have no folders: nothing to make.
    fn prepare_dir(&self, dir: &Name) -> Result<(), Error> {
        self.key(dir).map(|_| ())
    }

    fn contains(&self, dir: &Name, name: &Name) -> bool {
        let (Ok(dir), Ok(name)) = (self.key(dir), self.key(name)) else {
            return false;
        };
        let dir: Vec<_> = dir.parts().collect();
        let name: Vec<_> = name.parts().collect();
        name.len() > dir.len() && name[..dir.len()] == dir[..]
    }

    fn lock(&self, dir: &Name) -> Result<Option<Box<dyn std::any::Any + Send>>, Error> {
        Ok(Some(Box::new(lock::acquire(&self.inner, dir.as_str())?)))
    }
}

/// `endpoint` (from the setting `from`), shortened for messages, if it is an `http://` or
/// `https://` URL with a host: object_store builds each request's URI from it and panics
/// on one that does not parse.
fn checked_endpoint(endpoint: &str, from: &str) -> Result<String, String> {
    let bad = |why: String| {
        Err(format!(
            "{from} gives the endpoint {:?}, which is not an http:// or https:// URL: {why}",
            names::shorten(endpoint)
        ))
    };
    match endpoint.parse::<::http::Uri>() {
        Err(e) => bad(e.to_string()),
        Ok(uri) => match (uri.scheme_str(), uri.host()) {
            (Some("http" | "https"), Some(host)) if !host.is_empty() => {
                Ok(names::shorten(endpoint))
            }
            (Some("http" | "https"), _) => bad("it names no host".to_owned()),
            _ => bad("it names no http or https scheme".to_owned()),
        },
    }
}

#[cfg(test)]
mod tests;
