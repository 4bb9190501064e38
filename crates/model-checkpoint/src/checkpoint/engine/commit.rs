//! A save from the model's tensors to a committed file (in the foreground, or handed to the
//! writer thread), and what follows a committed save: the marker, the `last` link,
//! retention.

use std::path::Path;

use super::super::background::{BackgroundWriter, Outcome};
use super::{Engine, Job, Pending, Saved};
use crate::callback::Context;
use crate::model::NamedTensor;
use crate::policy::{files_to_keep, SavedFile};
use crate::store::{self, Kind, Meta, KEY_TRAINING_STATE, TRAINING_PREFIX};
use crate::{Error, Value};

/// What retention does with a file its rules no longer keep.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Deleted, or left alone for good (not provably this run's): no longer tracked.
    Forget,
    /// Not deleted this time: tracked, to try again at the next save.
    Keep,
}

impl Engine {
    /// Saves the model in `ctx` as `job` says. A full checkpoint also carries the training
    /// state, the other callbacks' states, and this callback's state under `key`, which
    /// `state_of` makes from the engine's state as it will be once this save is committed.
    pub fn save(
        &mut self,
        job: Job<'_>,
        ctx: &Context<'_>,
        key: &str,
        state_of: &dyn Fn(Saved) -> Option<serde_json::Value>,
    ) -> Result<(), Error> {
        let Job {
            path,
            kind,
            epoch,
            batch,
            logs,
            monitor,
            direction,
            commit,
        } = job;
        let model = ctx.model()?;
        let mut tensors: Vec<NamedTensor<'_>> = model.weights()?;
        if let Some(t) = tensors.iter().find(|t| t.name.starts_with(TRAINING_PREFIX)) {
            return Err(Error::TensorName {
                name: t.name.clone(),
                reason: "weights may not use the prefix reserved for training state",
            });
        }
        let seq = self.saved.seq;
        self.saved.seq = seq.saturating_add(1);
        let pending = Pending {
            file: SavedFile {
                path: path.to_path_buf(),
                epoch: epoch + 1,
                value: logs.get(monitor).unwrap_or(Value::None),
                seq,
            },
            direction,
            kind,
            batch: batch.map(|b| b + 1),
            global_step: ctx.global_step,
            monitor: monitor.to_owned(),
        };
        let meta = Meta {
            epoch: u64::try_from(epoch + 1).ok(),
            batch: batch.and_then(|b| u64::try_from(b + 1).ok()),
            global_step: Some(ctx.global_step),
            logs: logs.clone(),
            monitor: Some(monitor.to_owned()),
            run_id: Some(self.run_id().to_owned()),
        };
        let mut info = meta.to_info();
        if kind == Kind::Full {
            let training = model.training_state()?;
            if training.values.is_empty() && training.tensors.is_empty() {
                return Err(Error::NoTrainingState);
            }
            tensors.extend(training.tensors.into_iter().map(|mut t| {
                t.name = format!("{TRAINING_PREFIX}{}", t.name);
                t
            }));
            let mut values = training.values;
            // The other callbacks' state too, so that none resets on resume (those after this
            // one in the list have not yet seen the current epoch's end).
            let mut callbacks: serde_json::Map<String, serde_json::Value> =
                ctx.peer_states().into_iter().collect();
            if let Some(state) = state_of(self.after_commit(&pending)) {
                callbacks.insert(key.to_owned(), state);
            }
            values.insert("callbacks".to_owned(), serde_json::Value::Object(callbacks));
            info.insert(
                KEY_TRAINING_STATE.to_owned(),
                serde_json::Value::Object(values).to_string(),
            );
        }
        if let Some(ranks) = self.ranks {
            let layout = model.shard_layout();
            let step = ctx.global_step;
            return self.save_sharded(
                super::sharded::Shard {
                    ranks,
                    path,
                    kind,
                    layout: &layout,
                    step,
                },
                tensors,
                &info,
                pending,
            );
        }
        let mut options = self.options.clone();
        options.commit = commit;
        if !self.background {
            let name = path.to_string_lossy();
            let report = store::save_to(&*self.storage, &name, kind, &tensors, &info, &options)?;
            return self.committed(pending, report.header_digest);
        }
        if self.writer.is_none() {
            self.writer = Some(BackgroundWriter::start(self.storage.clone())?);
        }
        // At most `max_in_flight` snapshots exist: wait for the oldest save first.
        while self
            .writer
            .as_ref()
            .is_some_and(|w| w.in_flight() >= self.max_in_flight)
        {
            let outcome = self.writer.as_mut().and_then(BackgroundWriter::wait_one);
            if let Some(outcome) = outcome {
                self.settle(outcome)?;
            }
        }
        let Some(writer) = &mut self.writer else {
            return Ok(());
        };
        // Where the loop has a fence and the framework can share its tensors, the copy
        // happens on the writer thread while the next step computes.
        let shared: Option<Vec<_>> = ctx.fence().and_then(|_| {
            tensors
                .iter()
                .map(|t| t.data.share().map(|s| (t.name.clone(), s)))
                .collect()
        });
        match (ctx.fence(), shared) {
            (Some(fence), Some(shared)) => writer.submit_deferred(
                path.to_path_buf(),
                kind,
                shared,
                fence.enter(),
                info,
                options,
            )?,
            _ => writer.submit(path.to_path_buf(), kind, &tensors, info, options)?,
        }
        // A background save counts only once it is committed (see `committed`); its failure
        // surfaces at the next hook.
        self.in_flight.push_back(pending);
        Ok(())
    }

    /// The engine's state as it will be once `pending` is committed, so that a resumed run
    /// carries the same state as one that never stopped.
    fn after_commit(&self, pending: &Pending) -> Saved {
        let mut saved = self.saved.clone();
        saved.last_saved = Some(pending.file.path.clone());
        saved.saves = saved.saves.saturating_add(1);
        if self.retention.is_on() {
            saved.kept.retain(|f| f.path != pending.file.path);
            saved.kept.push(pending.file.clone());
            let keep = files_to_keep(&saved.kept, &self.retention, pending.direction);
            let mut keep = keep.into_iter();
            saved.kept.retain(|_| keep.next().unwrap_or(true));
        }
        saved
    }

    /// Handles a finished background job: a committed save is tracked (and may let
    /// retention delete older files); a failed one is returned.
    fn settle(&mut self, outcome: Outcome) -> Result<(), Error> {
        match outcome.result {
            Ok(None) => Ok(()),
            Ok(Some(report)) => match self.in_flight.pop_front() {
                Some(pending) => self.committed(pending, report.header_digest),
                None => Ok(()),
            },
            // Returned, not logged as well: the caller reports it (and Drop logs one nobody
            // collected).
            Err(e) => {
                self.in_flight.pop_front();
                Err(e)
            }
        }
    }

    /// A save is durable at its final path: track it, point `last` at it, and apply the
    /// retention rules. Only now may older files go, so a crash leaves extra files, never
    /// fewer.
    fn committed(&mut self, pending: Pending, digest: [u8; 32]) -> Result<(), Error> {
        self.journal_row("saved", &pending.file, Some(&pending));
        let Pending {
            file, direction, ..
        } = pending;
        self.saved.last_saved = Some(file.path.clone());
        self.saved.saves = self.saved.saves.saturating_add(1);
        // The proof, kept in the folder and never in a checkpoint, that this run wrote this
        // exact file: what retention and a later resume of this run check.
        self.mark_written(&file.path, digest)?;
        self.session_saved.insert(file.path.clone());
        if let Some(last) = self.last_path() {
            self.check_replaceable(&last)?;
            self.storage.copy(
                &file.path.to_string_lossy(),
                &last.to_string_lossy(),
                self.options.durable,
            )?;
        }
        self.retain(file, direction, |engine, f| {
            let digest = match engine.owns(&f.path) {
                Ok(digest) => digest,
                Err(why) => {
                    // Never deleted: only files this run provably wrote may go.
                    log::warn!(target: "model_checkpoint", "retention leaves {} alone: {why}", f.path.display());
                    return Fate::Forget;
                }
            };
            match engine.storage.delete(&f.path.to_string_lossy()) {
                Ok(()) => {
                    engine.journal_row("deleted", f, None);
                    engine.session_saved.retain(|p| *p != f.path);
                    engine.session_digests.remove(&f.path);
                    let marker = engine.marker(engine.run_id(), &digest);
                    if let Err(e) = engine.storage.delete(&marker) {
                        log::warn!(target: "model_checkpoint", "cannot remove {marker}: {e}");
                    }
                    Fate::Forget
                }
                Err(e) => {
                    // Left for the next round: an extra file is harmless.
                    log::warn!(target: "model_checkpoint", "cannot remove {}: {e}", f.path.display());
                    Fate::Keep
                }
            }
        });
        Ok(())
    }

    /// Records `event` of `file` in the journal, when there is one.
    pub(super) fn journal_row(
        &mut self,
        event: &'static str,
        file: &SavedFile,
        pending: Option<&Pending>,
    ) {
        let Some(mut journal) = self.journal.take() else {
            return;
        };
        let folder = self.folder();
        let name = if folder.as_os_str().is_empty() || folder == Path::new(".") {
            store::JOURNAL_FILE.to_owned()
        } else {
            format!("{}/{}", folder.to_string_lossy(), store::JOURNAL_FILE)
        };
        let row = super::journal::Row {
            seq: file.seq,
            event,
            epoch: file.epoch,
            batch: pending.and_then(|p| p.batch),
            global_step: pending.map(|p| p.global_step),
            kind: pending.map(|p| p.kind),
            path: &file.path.to_string_lossy(),
            monitor: pending.map_or("", |p| p.monitor.as_str()),
            value: &file.value,
            run_id: self.run_id(),
        };
        journal.record(&*self.storage, &name, &row);
        self.journal = Some(journal);
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
        if !self.retention.is_on() {
            return;
        }
        self.saved.kept.retain(|f| f.path != file.path);
        self.saved.kept.push(file);
        let keep = files_to_keep(&self.saved.kept, &self.retention, direction);
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
        let mut first = None;
        while let Some(outcome) = self.writer.as_mut().and_then(BackgroundWriter::wait_one) {
            if let Err(e) = self.settle(outcome) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Reports background saves that failed since the last call, and tracks the ones done.
    pub fn poll(&mut self) -> Result<(), Error> {
        let Some(writer) = &mut self.writer else {
            return Ok(());
        };
        if writer.in_flight() == 0 {
            return Ok(());
        }
        let mut first = None;
        for outcome in writer.finished() {
            if let Err(e) = self.settle(outcome) {
                first.get_or_insert(e);
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
        let Ok(model) = ctx.model() else {
            return Ok(());
        };
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
        if self.writer.is_none() {
            self.writer = Some(BackgroundWriter::start(self.storage.clone())?);
        }
        if let Some(writer) = &mut self.writer {
            writer.prepare(sizes)?;
        }
        Ok(())
    }
}
