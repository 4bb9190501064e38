//! Small files kept beside the checkpoints (the training history, the run's journal): read
//! whole with a size limit, rewritten whole and atomically (an object store cannot append).

use std::sync::{mpsc, Arc};

use super::{Name, SaveOptions, Storage};
use crate::Error;

/// The largest side file read back (to be continued or reported): 256 MiB.
pub const MAX_SIDE_FILE_BYTES: u64 = 256 << 20;

/// The whole object `name`, `None` when there is none. `what` names it in the error
/// (`"an index"`).
///
/// # Errors
///
/// [`Error::TooLarge`] above `max` bytes; [`Error::Io`] when it cannot be read.
pub fn read_small(
    storage: &dyn Storage,
    name: &Name,
    max: u64,
    what: &str,
) -> Result<Option<Vec<u8>>, Error> {
    let reader = match storage.open(name) {
        Ok(reader) => reader,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    if reader.len() > max {
        return Err(Error::TooLarge {
            what: crate::text::shorten(name.as_str(), 200),
            reason: format!(
                "{} bytes, more than the {max} {what} may have",
                reader.len()
            ),
        });
    }
    let mut bytes = vec![0; reader.len() as usize];
    reader.read_exact_at(&mut bytes, 0).map_err(|e| Error::Io {
        action: "read",
        path: name.clone(),
        source: e,
    })?;
    Ok(Some(bytes))
}

/// Replaces the object `name` with `bytes`, atomically.
///
/// # Errors
///
/// [`Error::Io`] when it cannot be written.
pub fn write_whole(storage: &dyn Storage, name: &Name, bytes: &[u8]) -> Result<(), Error> {
    let mut pending = storage.create(name, 0, Default::default())?;
    std::io::Write::write_all(&mut pending, bytes).map_err(|e| Error::Io {
        action: "write",
        path: name.clone(),
        source: e,
    })?;
    pending.commit(&[], SaveOptions::default().durable)
}

/// Rewrites side files on a thread of its own, in the order they are handed over, so that
/// the caller pays no storage round trip (locally a rewrite is a temporary file synced,
/// renamed, and its folder synced). A file's newer content still waiting replaces the
/// older, which is then never written. A failed write is reported by a later
/// [`SideWriter::write`] (which still hands its own content over) or by
/// [`SideWriter::flush`], which waits for every write; dropping the writer waits too.
///
/// ```
/// use std::sync::Arc;
/// use model_checkpoint::store::{LocalFolder, Name, SideWriter};
///
/// let dir = tempfile::tempdir()?;
/// let name = Name::from(dir.path().join("history.csv").as_path());
/// let mut writer = SideWriter::start(Arc::new(LocalFolder::default()))?;
/// writer.write(&name, b"epoch\r\n".to_vec())?;
/// writer.write(&name, b"epoch\r\n0\r\n".to_vec())?;
/// writer.flush()?;
/// assert_eq!(std::fs::read(dir.path().join("history.csv"))?, b"epoch\r\n0\r\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SideWriter {
    files: mpsc::Sender<Item>,
    results: mpsc::Receiver<Result<(), Error>>,
    /// Files handed over whose result has not come back.
    pending: usize,
    /// The storage the files are written through, handed to the thread with each file.
    storage: Arc<dyn Storage>,
}

/// A file as the thread receives it: with the storage to write it through, which the thread
/// holds only until the file's result is sent (see `Drop`).
type Item = (Arc<dyn Storage>, Name, Vec<u8>);

impl SideWriter {
    /// Starts the thread, writing through `storage`.
    ///
    /// # Errors
    ///
    /// [`Error::Writer`] when the thread cannot start.
    pub fn start(storage: Arc<dyn Storage>) -> Result<Self, Error> {
        let (files, queue) = mpsc::channel::<Item>();
        let (done, results) = mpsc::channel();
        // The thread is not joined (see `Drop`): its handle is let go here.
        std::thread::Builder::new()
            .name("side-file-writer".into())
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    // What else is waiting: of each name, only the newest is written, and
                    // an older content's result is the newest's (its bytes never reach the
                    // file on their own).
                    let mut batch = vec![first];
                    batch.extend(queue.try_iter());
                    // For each item, the newest item of its name (itself when it is).
                    let newest: Vec<usize> = (0..batch.len())
                        .map(|i| {
                            (i..batch.len())
                                .rev()
                                .find(|&j| batch[j].1 == batch[i].1)
                                .unwrap_or(i)
                        })
                        .collect();
                    let mut failed: Vec<Option<Error>> = batch
                        .iter()
                        .enumerate()
                        .map(|(i, (storage, name, bytes))| {
                            let last = newest[i] == i;
                            last.then(|| write_caught(&**storage, name, bytes).err())
                                .flatten()
                        })
                        .collect();
                    let results: Vec<Result<(), Error>> = batch
                        .iter()
                        .enumerate()
                        .map(|(i, (_, name, _))| {
                            let newest = newest[i];
                            match (i == newest, failed[newest].is_some()) {
                                (_, false) => Ok(()),
                                (true, true) => Err(failed[i].take().unwrap_or_else(stopped)),
                                (false, true) => Err(Error::Writer {
                                    reason: format!(
                                        "{name} was not written: its newer content failed"
                                    ),
                                    source: None,
                                }),
                            }
                        })
                        .collect();
                    // What the caller handed over (the storage, the names, the bytes) goes
                    // before the first result: once the caller has every result, the thread
                    // holds nothing of the caller's.
                    drop(batch);
                    for result in results {
                        if done.send(result).is_err() {
                            return;
                        }
                    }
                }
            })
            .map_err(|e| Error::Writer {
                reason: "cannot start the side-file writer".into(),
                source: Some(e),
            })?;
        Ok(SideWriter {
            files,
            results,
            pending: 0,
            storage,
        })
    }

    /// Hands over `bytes` as the new content of `name`.
    ///
    /// # Errors
    ///
    /// The failure of an earlier write, if one has failed since the last call; or
    /// [`Error::Writer`] when the thread has stopped.
    pub fn write(&mut self, name: &Name, bytes: Vec<u8>) -> Result<(), Error> {
        let earlier = self.collect(false);
        self.files
            .send((Arc::clone(&self.storage), name.clone(), bytes))
            .map_err(|_| stopped())?;
        self.pending += 1;
        earlier
    }

    /// Files handed over whose result has not come back yet (as of the last
    /// [`SideWriter::write`] or [`SideWriter::flush`]): the newest ones, in order.
    pub fn in_flight(&self) -> usize {
        self.pending
    }

    /// Waits until every file handed over is written.
    ///
    /// # Errors
    ///
    /// The first failure since the last call.
    pub fn flush(&mut self) -> Result<(), Error> {
        self.collect(true)
    }

    /// Takes the results that came back (waiting for all of them with `wait`); the first
    /// failure among them.
    fn collect(&mut self, wait: bool) -> Result<(), Error> {
        let mut first = Ok(());
        while self.pending > 0 {
            let result = if wait {
                self.results.recv().map_err(|_| stopped())
            } else {
                match self.results.try_recv() {
                    Ok(r) => Ok(r),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => Err(stopped()),
                }
            };
            match result {
                Ok(r) => {
                    self.pending -= 1;
                    first = crate::error::first_failure(first, r);
                }
                Err(e) => {
                    self.pending = 0;
                    first = crate::error::first_failure(first, Err(e));
                }
            }
        }
        first
    }
}

/// [`write_whole`], with a panic (a storage's bug) caught as that file's failure: the
/// thread goes on with the next files, and ends only when the writer is dropped, having let
/// go of everything it was handed.
fn write_caught(storage: &dyn Storage, name: &Name, bytes: &[u8]) -> Result<(), Error> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        write_whole(storage, name, bytes)
    }))
    .unwrap_or_else(|panic| {
        Err(Error::Writer {
            reason: format!(
                "writing {name} panicked: {}",
                crate::error::panic_message(&*panic)
            ),
            source: None,
        })
    })
}

fn stopped() -> Error {
    Error::Writer {
        reason: "the side-file writer stopped unexpectedly".into(),
        source: None,
    }
}

impl Drop for SideWriter {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            log::error!(target: "model_checkpoint", "a side file was not written, and nobody collected the failure: {e}");
        }
        // Every result is back (or the thread is gone): the thread holds nothing of the
        // caller's and only has to see the channel closed, which it does when `files` goes
        // with the writer. It is not waited for: a join costs two wake-ups across cores.
    }
}

/// A CSV field, quoted when it holds the separator, a quote or a line break.
pub fn csv_field(text: &str, separator: char) -> String {
    if text.contains([separator, '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}
