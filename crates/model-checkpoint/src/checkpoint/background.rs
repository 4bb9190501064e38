//! Saving on a background thread: the training thread only copies the tensors into host
//! memory (reusing the buffers of the previous save, so that a copy touches no new pages),
//! or, behind the snapshot fence, not even that, or hands over a frozen copy of the model
//! that the writer takes the tensors from; writing, syncing, renaming and, for a sharded
//! save, the commit happen on the writer thread.
//!
//! What the training thread allocated for a job (the job's closure and what it holds, the
//! tensors' names, a frozen copy of the model, shared tensor handles, a save's aftercare)
//! comes back to it with the job's outcome and is dropped there, as soon as a hook takes
//! the outcome in ([`BackgroundWriter::reap`] at every batch's end, where the loop calls
//! batch hooks; else at the next epoch's hooks). Not all of it: what a sharded save's
//! commit consumes, and whatever a job held when it panicked, are freed on the writer; so
//! are the few small blocks the engine clones there. glibc's malloc frees a block under
//! the lock of the arena of the thread that allocated it: a writer freeing the training
//! thread's blocks takes that lock while the training step allocates under it, and each
//! time they meet, one thread sleeps until the other wakes it. Measured on the digits MLP,
//! that slowed the steps that ran beside the writer by more than the save's own work on
//! the training thread.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, RecvError, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::callback::FenceGuard;
use crate::model::{HostTensor, NamedTensor, SharedTensor, TensorData};
use crate::store::Storage;
use crate::Error;

/// How the writer thread writes a snapshot: the tensors in the order they were handed
/// over, through the engine's storage; or, when the writer's copy of them failed, that
/// error, so that a sharded save still takes its part in the commit (its barriers) and
/// fails there rather than leaving the other ranks waiting.
/// `W` is what the caller learns of a finished job.
/// Called once; `FnMut` so that the box, and what it holds, goes back to the training
/// thread afterwards (see the module's documentation).
pub(crate) type WriteFn<W> = Box<
    dyn for<'t> FnMut(&dyn Storage, Result<Vec<NamedTensor<'t>>, Error>) -> Result<W, Error> + Send,
>;

/// Other work on storage, done in order with the saves (what follows a committed save).
/// Called once, and handed back like a [`WriteFn`].
pub(crate) type RunFn<W> = Box<dyn FnMut(&dyn Storage) -> W + Send>;

/// A save whose tensors are taken on the writer thread (from a frozen copy of the model:
/// see `Checkpointable::frozen`) and then written. Called once, and handed back like a
/// [`WriteFn`].
pub(crate) type ProduceFn<W> = Box<dyn FnMut(&dyn Storage) -> Result<W, Error> + Send>;

/// What a job took from the training thread, handed back to be dropped there.
type Leftovers = Box<dyn Send>;

/// Work for the writer thread.
enum Job<W> {
    /// Write this snapshot.
    Save {
        tensors: Vec<(String, HostTensor)>,
        write: WriteFn<W>,
    },
    /// Copy these shared tensors into `buffers` (releasing the fence once copied), then
    /// write the copy.
    CopyAndSave {
        shared: Vec<(String, SharedTensor)>,
        buffers: Vec<Vec<u8>>,
        fence: FenceGuard,
        write: WriteFn<W>,
    },
    /// Take the tensors and write them, both here.
    Produce(ProduceFn<W>),
    /// Allocate (and fault in) buffers of these sizes for the first snapshot, so that the
    /// training thread does not pay for fresh memory.
    Prepare(Vec<usize>),
    /// Do this, after the jobs before it.
    Run(RunFn<W>),
}

impl<W> Job<W> {
    fn of(&self) -> Of {
        match self {
            Job::Save { .. } | Job::CopyAndSave { .. } | Job::Produce(_) => Of::Save,
            Job::Prepare(_) | Job::Run(_) => Of::Other,
        }
    }
}

/// Does one job on the writer thread.
fn run_job<W: 'static>(storage: &dyn Storage, job: Job<W>) -> Outcome<W> {
    let of = job.of();
    let (result, buffers, leftovers) = match job {
        Job::Save { tensors, write } => {
            // The names and shapes were made in the hook: they go back too.
            let (result, buffers, names, write) = write_snapshot(storage, tensors, write);
            (result, buffers, Some(Box::new((names, write)) as Leftovers))
        }
        Job::CopyAndSave {
            shared,
            buffers,
            fence,
            mut write,
        } => {
            let views = shared
                .iter()
                .map(|(n, t)| (n.as_str(), &**t as &dyn TensorData));
            let copied = snapshot(views, buffers);
            // The copy is done (or failed): training may change the tensors.
            drop(fence);
            match copied {
                Ok(tensors) => {
                    // The names and shapes were made here, and are dropped here.
                    let (result, buffers, _, write) = write_snapshot(storage, tensors, write);
                    (
                        result,
                        buffers,
                        Some(Box::new((shared, write)) as Leftovers),
                    )
                }
                Err(e) => {
                    let result = write(storage, Err(e)).map(Some);
                    (
                        result,
                        Some(Vec::new()),
                        Some(Box::new((shared, write)) as Leftovers),
                    )
                }
            }
        }
        Job::Produce(mut produce) => {
            let result = produce(storage).map(Some);
            (result, None, Some(Box::new(produce) as Leftovers))
        }
        // Non-zero fill: the pages must really be allocated now.
        Job::Prepare(sizes) => (
            Ok(None),
            Some(sizes.into_iter().map(|n| vec![1u8; n]).collect()),
            None,
        ),
        Job::Run(mut run) => {
            let result = run(storage);
            (Ok(Some(result)), None, Some(Box::new(run) as Leftovers))
        }
    };
    Outcome {
        result,
        buffers,
        leftovers,
        of,
    }
}

/// The outcome of a job that panicked (a framework's copy, a storage's bug): that job
/// failed, and the thread goes on with the next. Whatever the job held was dropped while
/// unwinding (a fence it held is let go).
fn panicked<W>(of: Of, panic: &(dyn std::any::Any + Send)) -> Outcome<W> {
    Outcome {
        result: Err(panic_error(of, panic, " on the writer thread")),
        buffers: None,
        leftovers: None,
        of,
    }
}

/// The error a job that panicked fails with, `place` saying where it ran: on the writer
/// thread, or on the training thread (the last aftercare, which `Engine::flush` runs itself
/// once the writer is idle).
pub(crate) fn panic_error(of: Of, panic: &(dyn std::any::Any + Send), place: &str) -> Error {
    let what = if of == Of::Save {
        "a save"
    } else {
        "the work after a save"
    };
    Error::Writer {
        reason: format!(
            "{what} panicked{place}: {}",
            crate::error::panic_message(panic)
        ),
        source: None,
    }
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

/// A snapshot's buffers, one per tensor, kept for the next snapshot.
type Buffers = Vec<Vec<u8>>;

/// The tensors' names and shapes of a written snapshot.
type Names = Vec<(String, Vec<usize>)>;

/// Writes a snapshot; returns the result, its buffers for reuse, and the rest of what it
/// held (the tensors' names and shapes, and `write`), for the caller to drop where they
/// were made.
fn write_snapshot<W>(
    storage: &dyn Storage,
    tensors: Vec<(String, HostTensor)>,
    mut write: WriteFn<W>,
) -> (Result<Option<W>, Error>, Option<Buffers>, Names, WriteFn<W>) {
    let named: Vec<NamedTensor<'_>> = tensors
        .iter()
        .map(|(n, t)| NamedTensor::new(n.clone(), t.clone_ref()))
        .collect();
    let result = write(storage, Ok(named)).map(Some);
    let (names, buffers): (Vec<_>, Vec<_>) = tensors
        .into_iter()
        .map(|(n, t)| {
            let (shape, data) = t.into_parts();
            ((n, shape), data)
        })
        .unzip();
    (result, Some(buffers), names, write)
}

/// What the writer thread sends back: the result (`None` for a `Prepare`), and buffers for
/// the next snapshot (`None` from a job that had none: the pool stays as it is).
pub(crate) struct Outcome<W> {
    pub result: Result<Option<W>, Error>,
    buffers: Option<Vec<Vec<u8>>>,
    /// Dropped by `BackgroundWriter::receive`, on the training thread.
    leftovers: Option<Leftovers>,
    /// What the job was: the caller tracks saves in flight, and forgets them all when the
    /// thread is lost.
    pub of: Of,
}

/// What a finished job was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Of {
    /// A save (`Save`, `CopyAndSave`, `Produce`).
    Save,
    /// Other work (`Prepare`, `Run`).
    Other,
    /// Not a job: the thread is gone, and every job it held with it.
    Lost,
}

/// Pieces at least this large are copied by several threads at once.
const PARALLEL_COPY: usize = 4 << 20;

/// The cores this process may use (asked once: asking reads cgroup files).
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Copies `src` into `dst` (same length), splitting large copies across cores: a snapshot
/// is bounded by memory bandwidth, which one core does not saturate.
fn copy_parallel(dst: &mut [u8], src: &[u8]) {
    // The size first: asking the system for its cores reads cgroup files, which costs more
    // than copying a small tensor.
    let threads = if src.len() < PARALLEL_COPY {
        1
    } else {
        cores().min(4)
    };
    if threads < 2 {
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

/// A job as the thread receives it: with the storage it writes to, which the thread holds
/// only while it runs the job (see `Drop`).
type Sent<W> = (Arc<dyn Storage>, Job<W>);

/// The writer thread, doing its jobs in the order they come; `W` is what a finished job
/// reports.
pub(crate) struct BackgroundWriter<W> {
    jobs: Option<Sender<Sent<W>>>,
    outcomes: Receiver<Outcome<W>>,
    thread: Option<JoinHandle<()>>,
    /// Jobs sent whose outcome has not come back yet.
    in_flight: usize,
    /// Outcomes taken in early by [`BackgroundWriter::reap`], in order, not yet handed to
    /// the caller.
    received: VecDeque<Outcome<W>>,
    pool: Vec<Vec<u8>>,
    /// The storage the jobs write to, handed to the thread with each job.
    storage: Arc<dyn Storage>,
}

impl<W: Send + 'static> BackgroundWriter<W> {
    pub(crate) fn start(storage: Arc<dyn Storage>) -> Result<Self, Error> {
        let (job_tx, job_rx) = mpsc::channel::<Sent<W>>();
        let (out_tx, out_rx) = mpsc::channel::<Outcome<W>>();
        let thread = std::thread::Builder::new()
            .name("checkpoint-writer".into())
            .spawn(move || {
                for (storage, job) in job_rx {
                    let of = job.of();
                    // A panic fails its job alone: the saves behind it are still made.
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_job(&*storage, job)
                    }))
                    .unwrap_or_else(|panic| panicked(of, &*panic));
                    // Let go of the storage before the outcome: once the caller has it, the
                    // thread holds nothing of the caller's (see `Drop`).
                    drop(storage);
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
            received: VecDeque::new(),
            pool: Vec::new(),
            storage,
        })
    }

    /// Jobs in flight (saves, and other work): sent, and not yet handed to the caller.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight + self.received.len()
    }

    /// Takes in an outcome from the writer: its job is no longer in flight, its buffers go
    /// back to the pool, and what the job took from this thread is dropped here.
    fn receive(&mut self, mut outcome: Outcome<W>) -> Outcome<W> {
        self.in_flight -= 1;
        if let Some(buffers) = outcome.buffers.take() {
            self.pool = buffers;
        }
        drop(outcome.leftovers.take());
        outcome
    }

    /// Takes in the outcomes the writer has sent, without handing them to the caller yet
    /// (a hook that reports nothing calls this): a frozen copy of the model is freed as
    /// soon as its save is written, not at the next hook that settles saves.
    pub(crate) fn reap(&mut self) {
        while self.in_flight > 0 {
            match self.outcomes.try_recv() {
                Ok(o) => {
                    let o = self.receive(o);
                    self.received.push_back(o);
                }
                // A lost thread is reported by the next `finished` or `wait_one`.
                Err(_) => break,
            }
        }
    }

    /// Hands a job to the writer thread.
    fn send(&mut self, job: Job<W>) -> Result<(), Error> {
        let jobs = self.jobs.as_ref().ok_or_else(|| Error::Writer {
            reason: "the writer is closed".into(),
            source: None,
        })?;
        jobs.send((Arc::clone(&self.storage), job))
            .map_err(|_| Error::Writer {
                reason: "the writer thread stopped unexpectedly".into(),
                source: None,
            })?;
        self.in_flight += 1;
        Ok(())
    }

    /// Finished saves, without waiting.
    pub(crate) fn finished(&mut self) -> Vec<Outcome<W>> {
        let mut done: Vec<Outcome<W>> = self.received.drain(..).collect();
        while self.in_flight > 0 {
            match self.outcomes.try_recv() {
                Ok(o) => done.push(self.receive(o)),
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
    pub(crate) fn wait_one(&mut self) -> Option<Outcome<W>> {
        if let Some(o) = self.received.pop_front() {
            return Some(o);
        }
        if self.in_flight == 0 {
            return None;
        }
        Some(match recv_soon(&self.outcomes) {
            Ok(o) => self.receive(o),
            Err(_) => self.lost(),
        })
    }

    /// The writer thread died (a job's panic is caught, so this should not happen): every
    /// save in flight is lost, which must be reported, never ignored.
    fn lost(&mut self) -> Outcome<W> {
        self.in_flight = 0;
        Outcome {
            result: Err(Error::Writer {
                reason: "the writer thread stopped unexpectedly; saves in flight are lost".into(),
                source: None,
            }),
            buffers: None,
            leftovers: None,
            of: Of::Lost,
        }
    }

    /// Copies `tensors` into host memory, reusing the previous snapshot's buffers, and hands
    /// the copy to the writer thread, which writes it with `write`.
    pub(crate) fn submit(
        &mut self,
        tensors: &[NamedTensor<'_>],
        write: WriteFn<W>,
    ) -> Result<(), Error> {
        let pool = std::mem::take(&mut self.pool);
        let tensors = snapshot(tensors.iter().map(|t| (t.name.as_str(), &*t.data)), pool)?;
        self.send(Job::Save { tensors, write })
    }

    /// Hands shared tensors to the writer thread, which copies them while training goes on,
    /// holding `fence` until the copy is done, then writes the copy with `write`.
    pub(crate) fn submit_deferred(
        &mut self,
        shared: Vec<(String, SharedTensor)>,
        fence: FenceGuard,
        write: WriteFn<W>,
    ) -> Result<(), Error> {
        let buffers = std::mem::take(&mut self.pool);
        self.send(Job::CopyAndSave {
            shared,
            buffers,
            fence,
            write,
        })
    }

    /// Hands the writer thread a save it takes the tensors of itself.
    pub(crate) fn submit_produce(&mut self, produce: ProduceFn<W>) -> Result<(), Error> {
        self.send(Job::Produce(produce))
    }

    /// Has the writer thread do `run` after the jobs it holds; what it returns comes back
    /// as a finished job's outcome. A writer that cannot take it hands it back.
    pub(crate) fn run(&mut self, run: RunFn<W>) -> Result<(), RunFn<W>> {
        let Some(jobs) = self.jobs.as_ref() else {
            return Err(run);
        };
        match jobs.send((Arc::clone(&self.storage), Job::Run(run))) {
            Ok(()) => {
                self.in_flight += 1;
                Ok(())
            }
            Err(mpsc::SendError((_, job))) => match job {
                Job::Run(run) => Err(run),
                // Only the `Run` above was sent.
                _ => Ok(()),
            },
        }
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

impl<W> Drop for BackgroundWriter<W> {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has written what it holds. With jobs
        // in flight it is joined: no save outlives the callback (their results were
        // collected by `ModelCheckpoint::flush` at on_train_end if the caller cared; a
        // panic on the writer thread has nothing left to report to here). With every
        // outcome back, the thread holds nothing but its channels (not the storage, not the
        // folder's lock, which is the engine's) and only has to see the channel closed: it
        // is let go, not waited for. Waiting would cost two wake-ups across processors at
        // the end of every fit (measured: the callback's drop after a 10-epoch fit,
        // 0.13–0.19 ms joined, about 0.03 ms let go).
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            if self.in_flight > 0 {
                let _ = thread.join();
            }
        }
    }
}

/// How long a wait for the writer checks for its outcome before sleeping (see
/// [`recv_soon`]): a small model's save on tmpfs, the wait it is for, takes 0.2–0.5 ms.
const CHECK_BEFORE_SLEEPING: Duration = Duration::from_millis(1);

/// The next outcome from `outcomes`, waiting for it. The first [`CHECK_BEFORE_SLEEPING`]
/// are spent checking, giving the processor to any other thread between checks, and only
/// then does the thread sleep: a sleeping thread is woken by an interrupt from the writer's
/// processor, which on a virtual machine costs about 0.1 ms (measured at `on_train_end`,
/// which waits for a small model's last save, side by side: 0.28–0.40 ms sleeping,
/// 0.25–0.27 ms checking, with candle on tmpfs). The price is up to that long of processor
/// time a sleeping thread would have left to others (other ranks, a CPU quota); on a
/// single core, where checking could only delay the writer it waits for, the thread sleeps
/// at once.
fn recv_soon<T>(outcomes: &Receiver<T>) -> Result<T, RecvError> {
    if cores() < 2 {
        return outcomes.recv();
    }
    let until = Instant::now() + CHECK_BEFORE_SLEEPING;
    loop {
        match outcomes.try_recv() {
            Ok(outcome) => return Ok(outcome),
            Err(TryRecvError::Disconnected) => return Err(RecvError),
            Err(TryRecvError::Empty) if Instant::now() < until => std::thread::yield_now(),
            Err(TryRecvError::Empty) => return outcomes.recv(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// The engine waits for every save before its writer is dropped; a writer dropped with
    /// work still in flight (a panic out of that wait) must still finish it before the drop
    /// returns. (An idle writer's drop, which does not wait, is tested through the callback
    /// in `tests/background.rs`.)
    #[test]
    fn a_writer_dropped_with_work_in_flight_finishes_it_first() {
        let storage: Arc<dyn Storage> = Arc::new(crate::store::LocalFolder::default());
        let done = Arc::new(AtomicBool::new(false));
        let mut writer = BackgroundWriter::<()>::start(Arc::clone(&storage)).expect("start");
        let flag = Arc::clone(&done);
        let run: RunFn<()> = Box::new(move |_| {
            std::thread::sleep(Duration::from_millis(200));
            flag.store(true, Ordering::SeqCst);
        });
        assert!(writer.run(run).is_ok(), "the writer takes the job");
        assert_eq!(writer.in_flight(), 1);
        drop(writer);
        assert!(
            done.load(Ordering::SeqCst),
            "the drop returned before the job in flight was done"
        );
        // Nothing holds the storage now but its owner.
        assert_eq!(Arc::strong_count(&storage), 1);
    }
}
