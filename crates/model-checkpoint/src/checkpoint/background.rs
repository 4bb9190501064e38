//! Saving on a background thread: the training thread only copies the tensors into host
//! memory (reusing the buffers of the previous save, so that a copy touches no new pages);
//! writing, syncing and renaming happen on the writer thread.

use crate::store::Name;
use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;

use crate::callback::FenceGuard;
use crate::model::{HostTensor, NamedTensor, SharedTensor, TensorData};
use crate::store::{self, Kind, SaveOptions, SaveReport, Storage};
use crate::Error;

/// Work for the writer thread.
enum Job {
    /// Write this snapshot.
    Save {
        path: Name,
        kind: Kind,
        tensors: Vec<(String, HostTensor)>,
        info: BTreeMap<String, String>,
        options: SaveOptions,
    },
    /// Copy these shared tensors into `buffers` (releasing the fence once copied), then
    /// write the copy.
    CopyAndSave {
        path: Name,
        kind: Kind,
        shared: Vec<(String, SharedTensor)>,
        buffers: Vec<Vec<u8>>,
        fence: FenceGuard,
        info: BTreeMap<String, String>,
        options: SaveOptions,
    },
    /// Allocate (and fault in) buffers of these sizes for the first snapshot, so that the
    /// training thread does not pay for fresh memory.
    Prepare(Vec<usize>),
}

/// Copies every tensor into the buffers (reused in order, resized as needed).
fn snapshot<'t>(
    tensors: impl Iterator<Item = (&'t str, &'t dyn TensorData)>,
    mut pool: Vec<Vec<u8>>,
) -> Result<Vec<(String, HostTensor)>, Error> {
    pool.reverse();
    let mut out = Vec::new();
    for (name, data) in tensors {
        let len = data.byte_len();
        let mut buffer = pool.pop().unwrap_or_default();
        if buffer.len() != len {
            buffer.clear();
            buffer.resize(len, 0);
        }
        let mut offset = 0usize;
        data.write_to(&mut |piece| {
            let end = offset + piece.len();
            let dst = buffer.get_mut(offset..end).ok_or_else(|| {
                std::io::Error::other("the tensor holds more bytes than its shape")
            })?;
            copy_parallel(dst, piece);
            offset = end;
            Ok(())
        })
        .map_err(|source| Error::Snapshot {
            name: name.to_owned(),
            source,
        })?;
        buffer.truncate(offset);
        let host = HostTensor::new(data.dtype(), data.shape().into_owned(), buffer)?;
        out.push((name.to_owned(), host));
    }
    Ok(out)
}

/// Writes a snapshot and returns its buffers for reuse.
fn write_snapshot(
    storage: &dyn Storage,
    path: Name,
    kind: Kind,
    tensors: Vec<(String, HostTensor)>,
    info: &BTreeMap<String, String>,
    options: &SaveOptions,
) -> Outcome {
    let named: Vec<NamedTensor<'_>> = tensors
        .iter()
        .map(|(n, t)| NamedTensor::new(n.clone(), t.clone_ref()))
        .collect();
    let name = path;
    let result = store::save_to(storage, &name, kind, &named, info, options).map(Some);
    drop(named);
    let buffers = tensors.into_iter().map(|(_, t)| t.into_data()).collect();
    Outcome { result, buffers }
}

/// What the writer thread sends back: the result (`None` for a `Prepare`), and buffers for
/// the next snapshot.
pub(crate) struct Outcome {
    pub result: Result<Option<SaveReport>, Error>,
    buffers: Vec<Vec<u8>>,
}

/// Pieces at least this large are copied by several threads at once.
const PARALLEL_COPY: usize = 4 << 20;

/// Copies `src` into `dst` (same length), splitting large copies across cores: a snapshot
/// is bounded by memory bandwidth, which one core does not saturate.
fn copy_parallel(dst: &mut [u8], src: &[u8]) {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4);
    if src.len() < PARALLEL_COPY || threads < 2 {
        dst.copy_from_slice(src);
        return;
    }
    let chunk = src.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let mut parts = dst.chunks_mut(chunk).zip(src.chunks(chunk));
        let first = parts.next();
        for (d, s) in parts {
            scope.spawn(move || d.copy_from_slice(s));
        }
        if let Some((d, s)) = first {
            d.copy_from_slice(s);
        }
    });
}

pub(crate) struct BackgroundWriter {
    jobs: Option<Sender<Job>>,
    outcomes: Receiver<Outcome>,
    thread: Option<JoinHandle<()>>,
    in_flight: usize,
    pool: Vec<Vec<u8>>,
}

impl BackgroundWriter {
    pub(crate) fn start(storage: std::sync::Arc<dyn Storage>) -> Result<Self, Error> {
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let (out_tx, out_rx) = mpsc::channel::<Outcome>();
        let thread = std::thread::Builder::new()
            .name("checkpoint-writer".into())
            .spawn(move || {
                for job in job_rx {
                    let outcome = match job {
                        Job::Save {
                            path,
                            kind,
                            tensors,
                            info,
                            options,
                        } => write_snapshot(&*storage, path, kind, tensors, &info, &options),
                        Job::CopyAndSave {
                            path,
                            kind,
                            shared,
                            buffers,
                            fence,
                            info,
                            options,
                        } => {
                            let views = shared
                                .iter()
                                .map(|(n, t)| (n.as_str(), &**t as &dyn TensorData));
                            let copied = snapshot(views, buffers);
                            // The copy is done (or failed): training may change the tensors.
                            drop(fence);
                            drop(shared);
                            match copied {
                                Ok(tensors) => {
                                    write_snapshot(&*storage, path, kind, tensors, &info, &options)
                                }
                                Err(e) => Outcome {
                                    result: Err(e),
                                    buffers: Vec::new(),
                                },
                            }
                        }
                        Job::Prepare(sizes) => Outcome {
                            result: Ok(None),
                            // Non-zero fill: the pages must really be allocated now.
                            buffers: sizes.into_iter().map(|n| vec![1u8; n]).collect(),
                        },
                    };
                    if out_tx.send(outcome).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::Writer {
                reason: "cannot start the writer thread".into(),
                source: Some(e),
            })?;
        Ok(BackgroundWriter {
            jobs: Some(job_tx),
            outcomes: out_rx,
            thread: Some(thread),
            in_flight: 0,
            pool: Vec::new(),
        })
    }

    /// Saves in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn take(&mut self, mut outcome: Outcome) -> Outcome {
        self.in_flight -= 1;
        self.pool = std::mem::take(&mut outcome.buffers);
        outcome
    }

    /// Hands a job to the writer thread.
    fn send(&mut self, job: Job) -> Result<(), Error> {
        let jobs = self.jobs.as_ref().ok_or_else(|| Error::Writer {
            reason: "the writer is closed".into(),
            source: None,
        })?;
        jobs.send(job).map_err(|_| Error::Writer {
            reason: "the writer thread stopped unexpectedly".into(),
            source: None,
        })?;
        self.in_flight += 1;
        Ok(())
    }

    /// Finished saves, without waiting.
    pub(crate) fn finished(&mut self) -> Vec<Outcome> {
        let mut done = Vec::new();
        while self.in_flight > 0 {
            match self.outcomes.try_recv() {
                Ok(o) => done.push(self.take(o)),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    done.push(self.lost());
                    break;
                }
            }
        }
        done
    }

    /// Waits for the oldest save in flight.
    pub(crate) fn wait_one(&mut self) -> Option<Outcome> {
        if self.in_flight == 0 {
            return None;
        }
        Some(match self.outcomes.recv() {
            Ok(o) => self.take(o),
            Err(_) => self.lost(),
        })
    }

    /// The writer thread died (it only does if a save panicked): every save in flight is
    /// lost, which must be reported, never ignored.
    fn lost(&mut self) -> Outcome {
        self.in_flight = 0;
        Outcome {
            result: Err(Error::Writer {
                reason: "the writer thread stopped unexpectedly; saves in flight are lost".into(),
                source: None,
            }),
            buffers: Vec::new(),
        }
    }

    /// Copies `tensors` into host memory, reusing the previous snapshot's buffers, and hands
    /// the copy to the writer thread.
    pub(crate) fn submit(
        &mut self,
        path: Name,
        kind: Kind,
        tensors: &[NamedTensor<'_>],
        info: BTreeMap<String, String>,
        options: SaveOptions,
    ) -> Result<(), Error> {
        let pool = std::mem::take(&mut self.pool);
        let snapshot = snapshot(tensors.iter().map(|t| (t.name.as_str(), &*t.data)), pool)?;
        let job = Job::Save {
            path,
            kind,
            tensors: snapshot,
            info,
            options,
        };
        self.send(job)
    }

    /// Hands shared tensors to the writer thread, which copies them while training goes on,
    /// holding `fence` until the copy is done, then writes the copy.
    pub(crate) fn submit_deferred(
        &mut self,
        path: Name,
        kind: Kind,
        shared: Vec<(String, SharedTensor)>,
        fence: FenceGuard,
        info: BTreeMap<String, String>,
        options: SaveOptions,
    ) -> Result<(), Error> {
        let buffers = std::mem::take(&mut self.pool);
        let job = Job::CopyAndSave {
            path,
            kind,
            shared,
            buffers,
            fence,
            info,
            options,
        };
        self.send(job)
    }

    /// Has the writer thread allocate the first snapshot's buffers (sizes in tensor order)
    /// while training runs.
    pub(crate) fn prepare(&mut self, sizes: Vec<usize>) -> Result<(), Error> {
        self.send(Job::Prepare(sizes))
    }

    /// Drops the buffers kept for the next snapshot.
    pub(crate) fn release_buffers(&mut self) {
        self.pool = Vec::new();
    }
}

impl Drop for BackgroundWriter {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has written what it holds; joining
        // makes sure no save outlives the callback. Its results were collected by
        // `ModelCheckpoint::flush` (on_train_end) if the caller cared; a panic on the writer
        // thread has nothing left to report to here.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
