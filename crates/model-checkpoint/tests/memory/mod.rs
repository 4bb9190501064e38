//! A second implementation of `Storage`, in memory, to prove the seam: the callback layer
//! must work through it exactly as through a local folder. Not a product backend.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use model_checkpoint::store::{Commit, Name, ObjectMeta, ObjectReader, PendingObject, Storage};
use model_checkpoint::Error;

/// Objects by name, behind one lock.
#[derive(Debug)]
pub struct MemoryStorage {
    objects: Mutex<BTreeMap<String, Arc<Vec<u8>>>>,
    locks: Mutex<Vec<String>>,
    /// Objects opened from now on fail a read that reaches this offset (a test's fault).
    fail_reads_from: std::sync::atomic::AtomicU64,
    /// Bytes every reader has read so far.
    bytes_read: std::sync::atomic::AtomicU64,
}

impl Default for MemoryStorage {
    fn default() -> Self {
        MemoryStorage {
            objects: Mutex::default(),
            locks: Mutex::default(),
            fail_reads_from: std::sync::atomic::AtomicU64::new(u64::MAX),
            bytes_read: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl MemoryStorage {
    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Vec<u8>>>> {
        self.objects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The names of every object, sorted.
    #[allow(dead_code)]
    pub fn names(&self) -> Vec<String> {
        self.objects().keys().cloned().collect()
    }

    /// Makes readers opened from now on fail every read that reaches `offset` (with an
    /// error that is not an end of file), as a storage failing mid-read does.
    #[allow(dead_code)]
    pub fn fail_reads_from(&self, offset: u64) {
        self.fail_reads_from
            .store(offset, std::sync::atomic::Ordering::SeqCst);
    }

    /// Bytes every reader has read so far (reads that failed count nothing).
    #[allow(dead_code)]
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// An object's bytes.
    #[allow(dead_code)]
    pub fn get(&self, name: &str) -> Option<Vec<u8>> {
        self.objects().get(name).map(|b| b.to_vec())
    }
}

/// `a/./b` and `a//b` as `a/b`: names as the callback formats them.
fn clean(name: &str) -> String {
    name.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn in_dir(dir: &str, name: &str, depth: usize) -> bool {
    let dir = clean(dir);
    let rest = if dir.is_empty() {
        name
    } else {
        match name.strip_prefix(&format!("{dir}/")) {
            Some(rest) => rest,
            None => return false,
        }
    };
    rest.matches('/').count() <= depth
}

struct Pending {
    storage: Arc<MemoryStorage>,
    name: String,
    head_len: usize,
    body: Vec<u8>,
    commit: Commit,
}

impl Write for Pending {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.body.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl PendingObject for Pending {
    fn commit(self: Box<Self>, head: &[u8], _durable: bool) -> Result<(), Error> {
        assert_eq!(head.len(), self.head_len, "the head is the size reserved");
        let mut bytes = head.to_vec();
        bytes.extend_from_slice(&self.body);
        // Appears whole, at once (and, for a new name, only if still free).
        let mut objects = self.storage.objects();
        if self.commit == Commit::CreateNew && objects.contains_key(&self.name) {
            return Err(Error::AlreadyExists { name: self.name });
        }
        objects.insert(self.name, Arc::new(bytes));
        Ok(())
    }
}

struct Reader {
    bytes: Arc<Vec<u8>>,
    /// Reads reaching this offset fail.
    limit: u64,
    storage: Arc<MemoryStorage>,
}

impl ObjectReader for Reader {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset.saturating_add(buf.len() as u64) > self.limit {
            return Err(io::Error::other("injected read failure"));
        }
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let src = self
            .bytes
            .get(start..start + buf.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        self.storage
            .bytes_read
            .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

fn missing(name: &str) -> Error {
    let e = io::Error::new(io::ErrorKind::NotFound, format!("no object {name}"));
    // Error::io is the crate's own constructor; build the same variant here.
    Error::Io {
        action: "open",
        path: name.into(),
        source: e,
    }
}

/// The storage a test shares with its callbacks.
#[derive(Clone, Debug, Default)]
pub struct Shared(pub Arc<MemoryStorage>);

impl Storage for Shared {
    fn create(
        &self,
        name: &Name,
        head_len: u64,
        commit: Commit,
    ) -> Result<Box<dyn PendingObject>, Error> {
        Ok(Box::new(Pending {
            storage: self.0.clone(),
            name: clean(name.as_str()),
            head_len: head_len as usize,
            body: Vec::new(),
            commit,
        }))
    }
    fn put_if_absent(&self, name: &Name, bytes: &[u8]) -> Result<bool, Error> {
        let mut objects = self.0.objects();
        if objects.contains_key(&clean(name.as_str())) {
            return Ok(false);
        }
        objects.insert(clean(name.as_str()), Arc::new(bytes.to_vec()));
        Ok(true)
    }
    fn open(&self, name: &Name) -> Result<Box<dyn ObjectReader>, Error> {
        let bytes = self.0.objects().get(&clean(name.as_str())).cloned();
        bytes
            .map(|b| {
                let limit = self
                    .0
                    .fail_reads_from
                    .load(std::sync::atomic::Ordering::SeqCst);
                Box::new(Reader {
                    bytes: b,
                    limit,
                    storage: self.0.clone(),
                }) as Box<dyn ObjectReader>
            })
            .ok_or_else(|| missing(name.as_str()))
    }
    fn list(&self, dir: &Name, depth: usize) -> Result<Vec<ObjectMeta>, Error> {
        Ok(self
            .0
            .objects()
            .iter()
            .filter(|(name, _)| in_dir(dir.as_str(), name, depth))
            .map(|(name, bytes)| ObjectMeta {
                name: Name::from(name),
                size: bytes.len() as u64,
            })
            .collect())
    }
    fn exists(&self, name: &Name) -> Result<bool, Error> {
        Ok(self.0.objects().contains_key(&clean(name.as_str())))
    }
    fn delete(&self, name: &Name) -> Result<(), Error> {
        self.0.objects().remove(&clean(name.as_str()));
        Ok(())
    }
    fn copy(&self, from: &Name, to: &Name, _durable: bool) -> Result<(), Error> {
        let mut objects = self.0.objects();
        let bytes = objects
            .get(&clean(from.as_str()))
            .cloned()
            .ok_or_else(|| missing(from.as_str()))?;
        objects.insert(clean(to.as_str()), bytes);
        Ok(())
    }
    fn prepare_dir(&self, _dir: &Name) -> Result<(), Error> {
        Ok(())
    }
    fn contains(&self, dir: &Name, name: &Name) -> bool {
        !name.as_str().split('/').any(|c| c == "..")
            && in_dir(dir.as_str(), &clean(name.as_str()), usize::MAX)
    }
    fn lock(&self, dir: &Name) -> Result<Option<Box<dyn std::any::Any + Send>>, Error> {
        let mut locks = self
            .0
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !locks.contains(&clean(dir.as_str())) {
            locks.push(clean(dir.as_str()));
        }
        Ok(Some(Box::new(())))
    }
}
