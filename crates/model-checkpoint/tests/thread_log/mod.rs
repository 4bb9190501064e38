//! A storage for tests: the local folder, recording which thread does each operation, with
//! deletes that can be slowed down and writes that can be held or made to fail (as after a
//! kill).

use model_checkpoint::Error;

/// The local folder, recording which thread does each operation on storage (a pending
/// object's commit is the `create`'s thread's, as the object is handed on whole).
#[derive(Debug, Default)]
pub struct ThreadLog {
    inner: model_checkpoint::store::LocalFolder,
    ops: std::sync::Mutex<Vec<(String, &'static str, String)>>,
    /// How long each delete waits before it happens.
    delete_delay: std::time::Duration,
    /// (held, dead): new objects wait while held, and fail once dead.
    writes: std::sync::Mutex<(bool, bool)>,
    changed: std::sync::Condvar,
    /// Creating an object whose name ends with this panics (a storage's bug).
    panics_on: std::sync::Mutex<Option<String>>,
    /// Whether `put_if_absent` (a marker's write) panics.
    puts_panic: std::sync::atomic::AtomicBool,
}

impl ThreadLog {
    /// Deletes that wait `delay` first (what lets a later write overtake them).
    #[allow(dead_code)]
    pub fn slow_deletes(delay: std::time::Duration) -> Self {
        ThreadLog {
            delete_delay: delay,
            ..ThreadLog::default()
        }
    }
    fn note(&self, op: &'static str, name: &model_checkpoint::store::Name) {
        let thread = std::thread::current().name().unwrap_or("?").to_owned();
        self.ops
            .lock()
            .expect("log")
            .push((thread, op, name.as_str().to_owned()));
    }
    /// Holds new objects' creation while `held`; makes it fail once `dead` (nothing more
    /// reaches the disk, as after a kill).
    #[allow(dead_code)]
    pub fn set(&self, held: bool, dead: bool) {
        *self.writes.lock().expect("writes") = (held, dead);
        self.changed.notify_all();
    }

    /// Makes the creation of any object whose name ends with `suffix` panic.
    #[allow(dead_code)]
    pub fn panic_on(&self, suffix: &str) {
        *self.panics_on.lock().expect("panics") = Some(suffix.to_owned());
    }

    /// Makes every `put_if_absent` (a save's marker, in its aftercare) panic.
    #[allow(dead_code)]
    pub fn panic_on_puts(&self) {
        self.puts_panic
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The operations so far (thread, operation, name), emptying the record.
    #[allow(dead_code)]
    pub fn take(&self) -> Vec<(String, &'static str, String)> {
        std::mem::take(&mut *self.ops.lock().expect("log"))
    }
}

impl model_checkpoint::store::Storage for ThreadLog {
    fn create(
        &self,
        name: &model_checkpoint::store::Name,
        head_len: u64,
        commit: model_checkpoint::store::Commit,
    ) -> Result<Box<dyn model_checkpoint::store::PendingObject>, Error> {
        self.note("create", name);
        let panics = self.panics_on.lock().expect("panics").clone();
        if panics.is_some_and(|suffix| name.as_str().ends_with(&suffix)) {
            panic!("the storage panics on {name}");
        }
        let mut writes = self.writes.lock().expect("writes");
        while writes.0 {
            writes = self.changed.wait(writes).expect("writes");
        }
        if writes.1 {
            return Err(Error::Io {
                action: "write",
                path: name.clone(),
                source: std::io::Error::other("the process is dead"),
            });
        }
        drop(writes);
        self.inner.create(name, head_len, commit)
    }
    fn put_if_absent(
        &self,
        name: &model_checkpoint::store::Name,
        bytes: &[u8],
    ) -> Result<bool, Error> {
        self.note("put", name);
        if self.puts_panic.load(std::sync::atomic::Ordering::SeqCst) {
            panic!("the storage panics on {name}");
        }
        self.inner.put_if_absent(name, bytes)
    }
    fn open(
        &self,
        name: &model_checkpoint::store::Name,
    ) -> Result<Box<dyn model_checkpoint::store::ObjectReader>, Error> {
        self.note("open", name);
        self.inner.open(name)
    }
    fn list(
        &self,
        dir: &model_checkpoint::store::Name,
        depth: usize,
    ) -> Result<Vec<model_checkpoint::store::ObjectMeta>, Error> {
        self.note("list", dir);
        self.inner.list(dir, depth)
    }
    fn exists(&self, name: &model_checkpoint::store::Name) -> Result<bool, Error> {
        self.note("exists", name);
        self.inner.exists(name)
    }
    fn exists_as_own(&self, name: &model_checkpoint::store::Name) -> Result<bool, Error> {
        self.note("exists", name);
        self.inner.exists_as_own(name)
    }
    fn is_link(&self, name: &model_checkpoint::store::Name) -> Result<bool, Error> {
        self.note("exists", name);
        self.inner.is_link(name)
    }
    fn delete(&self, name: &model_checkpoint::store::Name) -> Result<(), Error> {
        self.note("delete", name);
        std::thread::sleep(self.delete_delay);
        self.inner.delete(name)
    }
    fn remove_empty_dir(&self, dir: &model_checkpoint::store::Name) -> Result<(), Error> {
        self.note("rmdir", dir);
        self.inner.remove_empty_dir(dir)
    }
    fn taken(&self, name: &model_checkpoint::store::Name) -> Result<bool, Error> {
        self.note("exists", name);
        self.inner.taken(name)
    }
    fn names_after_writing(&self) -> bool {
        self.inner.names_after_writing()
    }
    fn copy(
        &self,
        from: &model_checkpoint::store::Name,
        to: &model_checkpoint::store::Name,
        durable: bool,
    ) -> Result<(), Error> {
        self.note("copy", to);
        self.inner.copy(from, to, durable)
    }
    fn prepare_dir(&self, dir: &model_checkpoint::store::Name) -> Result<(), Error> {
        self.note("prepare_dir", dir);
        self.inner.prepare_dir(dir)
    }
    fn contains(
        &self,
        dir: &model_checkpoint::store::Name,
        name: &model_checkpoint::store::Name,
    ) -> bool {
        self.inner.contains(dir, name)
    }
    fn lock(
        &self,
        dir: &model_checkpoint::store::Name,
    ) -> Result<Option<Box<dyn std::any::Any + Send>>, Error> {
        self.note("lock", dir);
        self.inner.lock(dir)
    }
}
