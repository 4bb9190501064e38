//! A save from the model's tensors to a committed file (in the foreground, or handed to the
//! writer thread), and what follows a committed save: the marker, the `last` link,
//! retention.

use std::collections::BTreeMap;

use super::super::background::{panic_error, BackgroundWriter, Of, Outcome, ProduceFn, WriteFn};
use super::{Engine, Fate, Job, Pending, Planned, Saved, Shard, Written};
use crate::callback::Context;
use crate::document::TrainingDocument;
use crate::error::{first_failure, keep_first};
use crate::model::NamedTensor;
use crate::name::Name;
use crate::policy::{files_to_keep, SavedFile};
use crate::store::{self, Kind, Meta, KEY_TRAINING_STATE, TRAINING_PREFIX};
use crate::{Error, Value};

impl Engine {
    /// Refuses, before anything is printed or written, a full checkpoint of a model that
    /// hands over no training state. Checked once (a model that had it keeps it), through
    /// `Checkpointable::has_training_state`: whether the state can be built is learnt at
    /// the save that builds it.
    pub fn check_model(&mut self, ctx: &Context<'_>, kind: Kind) -> Result<(), Error> {
        if kind != Kind::Full || self.full_checked {
            return Ok(());
        }
        if !ctx.model()?.has_training_state()? {
            return Err(Error::NoTrainingState);
        }
        self.full_checked = true;
        Ok(())
    }

    /// Plans `job`: it takes its sequence number now, counts in the state other callbacks
    /// see from now on ([`Engine::promised`]), and is written by [`Engine::run_planned`].
    pub fn plan(&mut self, job: Job) {
        let seq = self.saved.seq;
        if !job.interrupt() {
            self.saved.seq = seq.saturating_add(1);
        }
        let pending = Pending {
            file: SavedFile {
                path: job.path.clone(),
                epoch: job.epoch + 1,
                value: job.logs.get(&job.monitor).unwrap_or(Value::None),
                seq,
            },
            direction: job.direction,
            kind: job.kind,
            batch: job.batch.map(|b| b + 1),
            global_step: job.global_step,
            monitor: job.monitor.clone(),
            counted: !job.interrupt(),
        };
        self.planned.push(Planned { job, pending });
    }

    /// Whether saves are planned and not yet written.
    pub fn has_planned(&self) -> bool {
        !self.planned.is_empty()
    }

    /// Writes the planned saves, in order. A full checkpoint carries the training state,
    /// every other callback's state as `ctx` shows them now, and this callback's under
    /// `key`, which `state_of` makes from the engine's state as it will be once every
    /// planned save is committed: a resumed run carries the same state as one that never
    /// stopped.
    ///
    /// # Errors
    ///
    /// The first failed save's error (the saves planned after it are still tried).
    pub fn run_planned(
        &mut self,
        ctx: &Context<'_>,
        key: &str,
        state_of: &dyn Fn(Saved) -> Option<serde_json::Value>,
    ) -> Result<(), Error> {
        // Every planned save is tried (a save on a signal, planned after a failed one, is
        // the last chance to keep the run's progress); the first failure is returned.
        let mut first = Ok(());
        while let Some(next) = self.planned.first() {
            // Only a full checkpoint carries this callback's state (as promised: with this
            // save and those planned after it counted).
            let own = if next.job.kind == Kind::Full {
                state_of(self.promised())
            } else {
                None
            };
            let planned = self.planned.remove(0);
            let written = match self.frozen_model(&planned, ctx) {
                Some(frozen) => self.hand_frozen(planned, ctx, key, own, frozen),
                None => self
                    .payload(&planned, ctx, key, own)
                    .and_then(|(tensors, info)| self.dispatch(planned, ctx, tensors, info)),
            };
            first = first_failure(first, written);
        }
        first
    }

    /// The tensors and the metadata of a planned save, taken from the model now.
    fn payload<'m>(
        &self,
        planned: &Planned,
        ctx: &Context<'m>,
        key: &str,
        own: Option<serde_json::Value>,
    ) -> Result<(Vec<NamedTensor<'m>>, Info), Error> {
        let described = self.describe(planned, ctx, key, own);
        assemble(ctx.model()?, described)
    }

    /// What a planned save records beyond the model's own tensors and values: its metadata,
    /// and for a full checkpoint every other callback's state as of the end of this round
    /// of hooks (they have all seen it: saves run once the round is over) and this one's.
    fn describe(
        &self,
        planned: &Planned,
        ctx: &Context<'_>,
        key: &str,
        own: Option<serde_json::Value>,
    ) -> Described {
        let Planned { job, pending } = planned;
        let meta = Meta {
            epoch: u64::try_from(job.epoch + 1).ok(),
            batch: pending.batch.and_then(|b| u64::try_from(b).ok()),
            global_step: Some(job.global_step),
            logs: job.logs.clone(),
            monitor: Some(job.monitor.clone()),
            mode: Some(pending.direction),
            run_id: Some(self.run_id().to_owned()),
            signal: job.signal.map(str::to_owned),
        };
        let callbacks = (job.kind == Kind::Full).then(|| {
            let mut callbacks: BTreeMap<String, serde_json::Value> =
                ctx.peer_states().into_iter().collect();
            if let Some(state) = own {
                callbacks.insert(key.to_owned(), state);
            }
            callbacks
        });
        Described { meta, callbacks }
    }

    /// The frozen copy of the model a background save of one file takes its tensors from on
    /// the writer thread, where the model offers one (see `Checkpointable::frozen`).
    /// Sharded and deduplicated saves, and saves on a signal, take them in the hook.
    fn frozen_model(
        &self,
        planned: &Planned,
        ctx: &Context<'_>,
    ) -> Option<Box<dyn crate::Checkpointable + Send>> {
        if !self.takes_frozen_copies() || planned.job.interrupt() {
            return None;
        }
        ctx.model().ok()?.frozen()
    }

    /// Whether this callback's saves (other than on a signal) are taken from a model's
    /// frozen copy where it offers one: background saves of one file.
    fn takes_frozen_copies(&self) -> bool {
        self.config.background && !self.config.dedup && self.config.folder_ranks().is_none()
    }

    /// Hands a save to the writer thread with a frozen copy of the model: the writer takes
    /// the tensors from it, then writes them. The training thread has only described the
    /// save.
    fn hand_frozen(
        &mut self,
        planned: Planned,
        ctx: &Context<'_>,
        key: &str,
        own: Option<serde_json::Value>,
        frozen: Box<dyn crate::Checkpointable + Send>,
    ) -> Result<(), Error> {
        let described = self.describe(&planned, ctx, key, own);
        let Planned { job, pending } = planned;
        let mut options = self.config.options.clone();
        options.commit = job.commit;
        let folder = self.folder_to_make(&job.path);
        let (name, kind) = (job.path, job.kind);
        // The frozen copy and the description stay in the closure, which goes back to the
        // training thread to be dropped (see `background`): the writer works on a clone.
        let produce: ProduceFn<Written> = Box::new(move |storage| {
            make_folder(storage, folder.as_ref())?;
            let (tensors, info) = assemble(&*frozen, described.clone())?;
            let info = info.render(&name)?;
            store::save_to(storage, &name, kind, &tensors, &info, &options).map(Written::File)
        });
        self.hand_over(pending, |writer| writer.submit_produce(produce))
    }

    /// Writes a planned save's payload: as a sharded checkpoint, in the foreground, or on
    /// the writer thread.
    fn dispatch(
        &mut self,
        planned: Planned,
        ctx: &Context<'_>,
        tensors: Vec<NamedTensor<'_>>,
        info: Info,
    ) -> Result<(), Error> {
        let Planned { job, pending } = planned;
        if self.config.dedup {
            let info = info.render(&job.path)?;
            return self.save_dedup(&job.path, job.kind, tensors, &info, pending);
        }
        if let Some(ranks) = self.config.folder_ranks() {
            let info = info.render(&job.path)?;
            let layout = ctx.model()?.shard_layout();
            return self.save_sharded(
                Shard {
                    ranks,
                    path: &job.path,
                    kind: job.kind,
                    layout: &layout,
                    step: job.global_step,
                    interrupt: job.interrupt(),
                },
                tensors,
                &info,
                pending,
                ctx,
            );
        }
        let mut options = self.config.options.clone();
        options.commit = job.commit;
        let name = job.path.clone();
        let folder = self.folder_to_make(&name);
        if !self.config.background || job.interrupt() {
            // Every earlier save first, so that this one is the newest when it returns; their
            // failure is reported, after this save is made.
            let earlier = if job.interrupt() {
                self.flush()
            } else {
                Ok(())
            };
            let saved = make_folder(&*self.config.storage, folder.as_ref())
                .and_then(|()| info.render(&name))
                .and_then(|info| {
                    store::save_to(
                        &*self.config.storage,
                        &name,
                        job.kind,
                        &tensors,
                        &info,
                        &options,
                    )
                })
                .and_then(|report| self.committed(pending, report.header_digest));
            return first_failure(earlier, saved);
        }
        let kind = job.kind;
        // The metadata and the training document are written as text on the writer thread,
        // not in the hook; their values stay in the closure, which goes back to the training
        // thread to be freed (see `background`).
        let write: WriteFn<Written> = Box::new(move |storage, named| {
            let named = named?;
            make_folder(storage, folder.as_ref())?;
            let info = info.render(&name)?;
            store::save_to(storage, &name, kind, &named, &info, &options).map(Written::File)
        });
        self.hand_to_writer(ctx, &tensors, write, pending)
    }

    /// Hands a save to the writer thread: the tensors are copied now, or, where the loop
    /// has a fence and the framework can share its tensors, by the writer while the next
    /// step computes; `write` writes the copy there. The save counts once the writer
    /// reports it written (see [`Engine::poll`]); its failure surfaces at the next hook.
    pub(super) fn hand_to_writer(
        &mut self,
        ctx: &Context<'_>,
        tensors: &[NamedTensor<'_>],
        write: WriteFn<Written>,
        pending: Pending,
    ) -> Result<(), Error> {
        let shared: Option<Vec<_>> = ctx.fence().and_then(|_| {
            tensors
                .iter()
                .map(|t| t.data.share().map(|s| (t.name.clone(), s)))
                .collect()
        });
        self.hand_over(pending, |writer| match (ctx.fence(), shared) {
            (Some(fence), Some(shared)) => writer.submit_deferred(shared, fence.enter(), write),
            _ => writer.submit(tensors, write),
        })
    }

    /// Hands a save over with `submit` once fewer than `max_in_flight` are in flight
    /// (waiting for the oldest first: its failure is reported once this save is handed
    /// over), starting a writer thread where there is none.
    fn hand_over(
        &mut self,
        pending: Pending,
        submit: impl FnOnce(&mut BackgroundWriter<Written>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut earlier = Ok(());
        while self.in_flight.len() >= self.config.max_in_flight {
            let outcome = self.writer.as_mut().and_then(BackgroundWriter::wait_one);
            match outcome {
                Some(outcome) => earlier = first_failure(earlier, self.settle(outcome)),
                None => break,
            }
        }
        // After waiting: a writer found dead while waiting is replaced here.
        let writer = match &mut self.writer {
            Some(writer) => writer,
            None => match BackgroundWriter::start(self.config.storage.clone()) {
                Ok(started) => self.writer.insert(started),
                Err(e) => return first_failure(earlier, Err(e)),
            },
        };
        if let Err(e) = submit(writer) {
            return first_failure(earlier, Err(e));
        }
        self.in_flight.push_back(pending);
        first_failure(earlier, self.send_aftercare())
    }

    /// The engine's state as it will be once every save in flight and every planned one is
    /// committed: what full checkpoints carry of this callback (its own saves and other
    /// callbacks' alike), so that a resumed run carries the same state as one that never
    /// stopped.
    pub fn promised(&self) -> Saved {
        let mut saved = self.saved.clone();
        let pendings = self
            .in_flight
            .iter()
            .chain(self.planned.iter().map(|p| &p.pending))
            .filter(|p| p.counted);
        for pending in pendings {
            saved.last_saved = Some(pending.file.path.clone());
            saved.saves = saved.saves.saturating_add(1);
            if self.config.retention.is_on() {
                saved.kept.retain(|f| f.path != pending.file.path);
                saved.kept.push(pending.file.clone());
                let keep = files_to_keep(&saved.kept, &self.config.retention, pending.direction);
                let mut keep = keep.into_iter();
                saved.kept.retain(|_| keep.next().unwrap_or(true));
            }
        }
        saved
    }

    /// Handles a finished background job: a committed save is tracked, and what follows it
    /// on storage is readied for the writer thread (see [`Engine::aftercare`] and
    /// [`Engine::send_aftercare`]); a finished aftercare is taken in; a failed save is
    /// returned.
    fn settle(&mut self, outcome: Outcome<Written>) -> Result<(), Error> {
        let of = outcome.of;
        match outcome.result {
            Ok(None) => Ok(()),
            Ok(Some(Written::Aftercare(done))) => self.after(done),
            Ok(Some(Written::File(report))) => {
                if let Some(pending) = self.in_flight.pop_front() {
                    let care = self.aftercare(pending, report.header_digest);
                    self.pending_aftercare.push(Box::new(move |storage| {
                        Written::Aftercare(care.run(storage))
                    }));
                }
                Ok(())
            }
            Ok(Some(Written::Folder(ranks))) => {
                if let Some(pending) = self.in_flight.pop_front() {
                    let mut care = self.folder_aftercare(pending, ranks);
                    self.pending_aftercare.push(Box::new(move |storage| {
                        Written::Aftercare(care.run(storage))
                    }));
                    // At once, not after the hook's own save: a committed folder is never
                    // saved into again, so a save to a name retention is about to free must
                    // find it freed.
                    return self.send_aftercare();
                }
                Ok(())
            }
            // Returned, not logged as well: the caller reports it (and Drop logs one nobody
            // collected).
            Err(e) => {
                match of {
                    Of::Save => {
                        self.in_flight.pop_front();
                    }
                    Of::Other => {}
                    // The thread died and took every save it held: none of them will
                    // report, so none is counted as coming (in the state a full checkpoint
                    // carries, or as a name taken). The next save starts a new thread.
                    Of::Lost => {
                        self.in_flight.clear();
                        self.writer = None;
                    }
                }
                Err(e)
            }
        }
    }

    /// Hands the aftercare of the saves settled so far to the writer thread, after what it
    /// holds. It is held back until the hook's own save (if any) is handed over, or the
    /// next hook: the writer then copies that save first, so that the loop's fence never
    /// waits behind a journal rewrite or a `last` copy; and a save to a name retention is
    /// about to delete is written before the delete, which then finds a file it did not
    /// decide on and leaves it. Where the writer cannot take it, it runs here.
    fn send_aftercare(&mut self) -> Result<(), Error> {
        self.do_aftercare(true)
    }

    /// Does the aftercare of the saves settled so far: on the writer thread (after what it
    /// holds) when `on_writer`, else here; here too where the writer cannot take it. Done
    /// here, a panic (a storage's bug) fails that aftercare alone, as on the writer.
    fn do_aftercare(&mut self, on_writer: bool) -> Result<(), Error> {
        let mut first = Ok(());
        for run in std::mem::take(&mut self.pending_aftercare) {
            let mut run = match self.writer.as_mut().filter(|_| on_writer) {
                Some(writer) => match writer.run(run) {
                    Ok(()) => continue,
                    Err(run) => run,
                },
                None => run,
            };
            let storage = &*self.config.storage;
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(storage))) {
                Ok(Written::Aftercare(done)) => first = first_failure(first, self.after(done)),
                Ok(_) => {}
                Err(panic) => {
                    let error = panic_error(Of::Other, &*panic, " on the training thread");
                    first = first_failure(first, Err(error));
                }
            }
        }
        first
    }

    /// A save committed in the foreground: track it, and do what follows on storage (see
    /// [`Engine::aftercare`]) now.
    fn committed(&mut self, pending: Pending, digest: [u8; 32]) -> Result<(), Error> {
        let care = self.aftercare(pending, digest);
        let done = care.run(&*self.config.storage);
        self.after(done)
    }

    /// The journal's row for `event` of `file`.
    pub(super) fn row(
        &self,
        event: &'static str,
        file: &SavedFile,
        pending: Option<&Pending>,
    ) -> super::journal::Row {
        super::journal::Row {
            seq: file.seq,
            event,
            epoch: file.epoch,
            batch: pending.and_then(|p| p.batch),
            global_step: pending.map(|p| p.global_step),
            kind: pending.map(|p| p.kind),
            path: file.path.as_str().to_owned(),
            monitor: pending.map_or(String::new(), |p| p.monitor.clone()),
            value: file.value,
            run_id: self.run_id().to_owned(),
        }
    }

    /// Tracks `file` for retention (when on) and hands every file the rules no longer keep
    /// to `remove`, which deletes it or says why not; it stays tracked only if `remove`
    /// says [`Fate::Keep`] (to try again at the next save).
    pub(super) fn retain(
        &mut self,
        file: SavedFile,
        direction: crate::policy::Direction,
        mut remove: impl FnMut(&mut Engine, &SavedFile) -> Fate,
    ) {
        if !self.config.retention.is_on() {
            return;
        }
        self.saved.kept.retain(|f| f.path != file.path);
        self.saved.kept.push(file);
        let keep = files_to_keep(&self.saved.kept, &self.config.retention, direction);
        let mut kept = Vec::with_capacity(self.saved.kept.len());
        for (f, keep) in std::mem::take(&mut self.saved.kept).into_iter().zip(keep) {
            if keep || remove(self, &f) == Fate::Keep {
                kept.push(f);
            }
        }
        self.saved.kept = kept;
    }

    /// Waits until every background save is committed.
    ///
    /// # Errors
    ///
    /// The first failed save's error.
    pub fn flush(&mut self) -> Result<(), Error> {
        self.settle_collection();
        let mut first = None;
        loop {
            // Once the writer holds nothing, what follows the last saves is done here: this
            // thread waits for it anyway, and handing it to the idle writer would cost a
            // wake-up each way (the end of every `fit` with background saves).
            let idle = self.writer.as_ref().is_none_or(|w| w.in_flight() == 0);
            if let Err(e) = self.do_aftercare(!idle) {
                keep_first(&mut first, e);
            }
            // Settling a save readies its aftercare, sent at the next turn.
            let Some(outcome) = self.writer.as_mut().and_then(BackgroundWriter::wait_one) else {
                break;
            };
            if let Err(e) = self.settle(outcome) {
                keep_first(&mut first, e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Takes in what the writer has finished without settling it (the next [`Engine::poll`]
    /// does, and reports failures): what the saves took from the training thread is freed
    /// now. For hooks that report nothing (a batch's end when saves are per epoch).
    pub fn reap(&mut self) {
        if let Some(writer) = &mut self.writer {
            writer.reap();
        }
    }

    /// Reports background saves that failed since the last call, and tracks the ones done.
    pub fn poll(&mut self) -> Result<(), Error> {
        // What an earlier hook settled and no save of its own carried along.
        let mut first = self.send_aftercare().err();
        let Some(writer) = &mut self.writer else {
            return first.map_or(Ok(()), Err);
        };
        if writer.in_flight() > 0 {
            for outcome in writer.finished() {
                if let Err(e) = self.settle(outcome) {
                    keep_first(&mut first, e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Starts the writer thread and has it allocate the snapshot buffers now, while training
    /// runs, rather than at the first save.
    pub fn prepare_background(&mut self, ctx: &Context<'_>, kind: Kind) -> Result<(), Error> {
        if self.writer.as_ref().is_some_and(|w| w.in_flight() > 0) {
            return Ok(());
        }
        // A rank of a sharded run copies only its share, chosen at each save: its buffers
        // are made by its first save, not a whole model's worth here.
        if self.config.ranks.is_some() {
            return Ok(());
        }
        let Ok(model) = ctx.model() else {
            return Ok(());
        };
        if self.writer.is_none() {
            self.writer = Some(BackgroundWriter::start(self.config.storage.clone())?);
        }
        // A model the writer takes frozen copies of needs no buffers here (see
        // `Engine::frozen_model`; this one is only looked at).
        if self.takes_frozen_copies() && model.frozen().is_some() {
            return Ok(());
        }
        let mut sizes: Vec<usize> = model.weights()?.iter().map(|t| t.data.byte_len()).collect();
        if kind == Kind::Full {
            sizes.extend(
                model
                    .training_state()?
                    .tensors
                    .iter()
                    .map(|t| t.data.byte_len()),
            );
        }
        if let Some(writer) = &mut self.writer {
            writer.prepare(sizes)?;
        }
        Ok(())
    }
}

/// Makes the folder a background save's hook left to the thread that writes it (see
/// `Engine::folder_to_make`).
pub(super) fn make_folder(
    storage: &dyn crate::store::Storage,
    folder: Option<&Name>,
) -> Result<(), Error> {
    folder.map_or(Ok(()), |dir| storage.prepare_dir(dir))
}

/// What a save records besides the model's tensors and values (see `Engine::describe`).
#[derive(Clone)]
struct Described {
    /// The metadata (epoch, step, logs, run id).
    meta: Meta,
    /// For a full checkpoint, the callbacks' states by key.
    callbacks: Option<BTreeMap<String, serde_json::Value>>,
}

/// A save's metadata, not yet written as text: a background save writes it on the writer
/// thread ([`Info::render`]), so that the hook does not.
struct Info {
    meta: Meta,
    /// For a full checkpoint, its training document.
    document: Option<TrainingDocument>,
}

impl Info {
    /// The metadata as the file holds it; `path` is the save's, for errors.
    fn render(&self, path: &Name) -> Result<BTreeMap<String, String>, Error> {
        let mut info = self.meta.to_info();
        if let Some(document) = &self.document {
            let text = document.to_json().map_err(|e| Error::BadTrainingState {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            info.insert(KEY_TRAINING_STATE.to_owned(), text);
        }
        Ok(info)
    }
}

/// A save's tensors and metadata, from `model` (live in the hook, or a frozen copy on the
/// writer thread): its weights, and for a full checkpoint (`callbacks` present) its
/// training tensors under the training prefix and its training document with the
/// callbacks' states.
fn assemble<'m>(
    model: &'m dyn crate::Checkpointable,
    described: Described,
) -> Result<(Vec<NamedTensor<'m>>, Info), Error> {
    let Described { meta, callbacks } = described;
    let mut tensors: Vec<NamedTensor<'m>> = model.weights()?;
    if let Some(t) = tensors.iter().find(|t| t.name.starts_with(TRAINING_PREFIX)) {
        return Err(Error::TensorName {
            name: t.name.clone(),
            reason: "weights may not use the prefix reserved for training state",
        });
    }
    let mut document = None;
    if let Some(callbacks) = callbacks {
        let training = model.training_state()?;
        if training.is_empty() {
            return Err(Error::NoTrainingState);
        }
        tensors.extend(training.tensors.into_iter().map(|mut t| {
            t.name = format!("{TRAINING_PREFIX}{}", t.name);
            t
        }));
        let mut training_document = training.document;
        training_document.callbacks = callbacks;
        document = Some(training_document);
    }
    Ok((tensors, Info { meta, document }))
}
