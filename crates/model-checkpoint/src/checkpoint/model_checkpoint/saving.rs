//! How a due save runs: Keras's `_save_model` order of effects, the write itself (in the
//! foreground or handed to the writer thread), and what follows a committed save (the
//! `last` link, retention).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::super::background::{BackgroundWriter, Outcome};
use super::super::messages;
use super::{ModelCheckpoint, Output};
use crate::callback::Context;
use crate::model::NamedTensor;
use crate::policy::{files_to_keep, judge, SavedFile, Verdict};
use crate::store::{self, Kind, Meta, KEY_TRAINING_STATE, TRAINING_PREFIX};
use crate::template::{self, FormatError};
use crate::{Error, Logs, Value};

/// Why a save is attempted.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Reason {
    /// Keras's schedule (`save_freq`, `period`).
    Keras,
    /// A trigger beyond Keras (steps, epochs, seconds): Keras's counters stay untouched.
    Trigger,
}

/// A save that is due: where, what kind, and at which point of training.
pub(super) struct Due<'a> {
    path: &'a Path,
    kind: Kind,
    epoch: i64,
    batch: Option<i64>,
    logs: &'a Logs,
}

impl<'a> Due<'a> {
    fn new(path: &'a Path, kind: Kind, epoch: i64, batch: Option<i64>, logs: &'a Logs) -> Self {
        Due {
            path,
            kind,
            epoch,
            batch,
            logs,
        }
    }
}

/// What a save in progress will be tracked as once committed.
pub(super) struct Pending {
    pub file: SavedFile,
}

impl ModelCheckpoint {
    pub(super) fn say(&mut self, message: &str) {
        if self.verbose <= 0 {
            return;
        }
        let line = format!("{message}\n");
        // Like Python's print to a closed pipe, a failing console must not fail training.
        let _ = match &mut self.output {
            Output::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(line.as_bytes()).and_then(|()| out.flush())
            }
            Output::Writer(w) => w.write_all(line.as_bytes()).and_then(|()| w.flush()),
        };
    }

    /// Keras's `_get_file_path`: `filepath.format(epoch=epoch + 1, batch=batch + 1, **logs)`,
    /// leaving `batch` out at epoch level or when the logs carry their own.
    fn format_path(&self, epoch: i64, batch: Option<i64>, logs: &Logs) -> Result<String, Error> {
        if logs.contains("epoch") {
            return Err(Error::EpochInLogs);
        }
        let mut kwargs: Vec<(&str, Value)> = Vec::with_capacity(logs.len() + 2);
        kwargs.push(("epoch", Value::Int(epoch + 1)));
        if let Some(b) = batch.filter(|_| !logs.contains("batch")) {
            kwargs.push(("batch", Value::Int(b + 1)));
        }
        kwargs.extend(logs.iter());
        let path = template::format(&self.filepath, &kwargs).map_err(|source| match source {
            FormatError::MissingKey { key } => Error::MissingTemplateKey {
                template: self.filepath.clone(),
                key,
            },
            source => Error::Template {
                template: self.filepath.clone(),
                source,
            },
        })?;
        self.check_path(&path)?;
        Ok(path)
    }

    /// `path`, or with `overwrite` off and `path` taken, the first free `NAME-vN.EXT`.
    fn free_path(&self, path: PathBuf) -> Result<PathBuf, Error> {
        let taken = |p: &Path| self.storage.exists(&p.to_string_lossy());
        if self.extras.overwrite || !taken(&path)? {
            return Ok(path);
        }
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ext = path
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        for v in 1u64.. {
            let candidate = path.with_file_name(format!("{stem}-v{v}{ext}"));
            if !taken(&candidate)? {
                return Ok(candidate);
            }
        }
        Ok(path)
    }

    /// Keras's `_save_model`, in Keras's order of effects (KERAS-SPEC.md §19): reset the period
    /// counter, format (possibly failing), create the folder, then check the monitor, print,
    /// update `best`, save. Returns whether an attempt was due.
    pub(super) fn save_model(
        &mut self,
        epoch: i64,
        batch: Option<i64>,
        logs: &Logs,
        ctx: &Context<'_>,
        reason: Reason,
    ) -> Result<bool, Error> {
        if reason == Reason::Keras && !self.state.schedule.attempt_due(self.save_freq, self.period)
        {
            return Ok(false);
        }
        let filepath = self.format_path(epoch, batch, logs)?;
        // Keras fails on a missing model here: after formatting, before making folders.
        ctx.model()?;
        self.ensure_run_id();
        let path = PathBuf::from(&filepath);
        // tf.keras creates the folder before looking at the monitor, so skipped epochs can
        // leave empty folders (trace missing_monitor_dir_created).
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !filepath.starts_with("gs://") {
                self.storage.prepare_dir(&dir.to_string_lossy())?;
            }
        }
        self.ensure_lock()?;
        let path = self.free_path(path)?;
        let shown = if self.extras.overwrite {
            filepath
        } else {
            path.display().to_string()
        };
        let current = logs.get(&self.monitor);
        match judge(
            self.save_best_only,
            self.direction,
            current,
            self.state.best,
        ) {
            Verdict::MonitorMissing => {
                log::warn!(target: "model_checkpoint", "{}", messages::monitor_missing(&self.monitor));
            }
            Verdict::NotImproved { best } => {
                self.say(&messages::not_improved(epoch, &self.monitor, best));
            }
            Verdict::Improved { from, to } => {
                self.say(&messages::improved(epoch, &self.monitor, from, to, &shown));
                // Keras updates best before saving, so a failed save still moves it.
                self.state.best = to;
                let kind = self.kind();
                self.write(Due::new(&path, kind, epoch, batch, logs), ctx)?;
            }
            Verdict::Save => {
                self.say(&messages::saving(epoch, &shown));
                let kind = self.kind();
                self.write(Due::new(&path, kind, epoch, batch, logs), ctx)?;
            }
        }
        Ok(true)
    }

    fn kind(&self) -> Kind {
        if self.save_weights_only {
            Kind::Weights
        } else {
            Kind::Full
        }
    }

    /// Saves a full checkpoint because a signal asked training to stop, and waits until it
    /// is durable (beyond Keras).
    pub(super) fn save_interrupted(
        &mut self,
        signal: &'static str,
        epoch: i64,
        batch: Option<i64>,
        logs: &Logs,
        ctx: &Context<'_>,
    ) -> Result<(), Error> {
        self.flush()?;
        ctx.model()?;
        let dir = self.static_dir();
        self.storage.prepare_dir(&dir.to_string_lossy())?;
        self.ensure_lock()?;
        let path = match self.last_path() {
            Some(last) => {
                self.check_replaceable(&last)?;
                last
            }
            // The shared name only if it is free or this run's; never another run's (or a
            // user's) file.
            None => {
                let shared = dir.join("interrupted.safetensors");
                if self.replaceable(&shared) {
                    shared
                } else {
                    dir.join(format!("interrupted-{}.safetensors", self.run_id()))
                }
            }
        };
        self.say(&format!(
            "\nEpoch {}: {signal} received, saving a full checkpoint to {}",
            epoch + 1,
            path.display()
        ));
        let background = std::mem::replace(&mut self.background, false);
        let written = self.write(Due::new(&path, Kind::Full, epoch, batch, logs), ctx);
        self.background = background;
        written?;
        self.extras.interrupted = Some(signal);
        Ok(())
    }

    fn write(&mut self, due: Due<'_>, ctx: &Context<'_>) -> Result<(), Error> {
        let Due {
            path,
            kind,
            epoch,
            batch,
            logs,
        } = due;
        let model = ctx.model()?;
        let mut tensors: Vec<NamedTensor<'_>> = model.weights()?;
        if let Some(t) = tensors.iter().find(|t| t.name.starts_with(TRAINING_PREFIX)) {
            return Err(Error::TensorName {
                name: t.name.clone(),
                reason: "weights may not use the prefix reserved for training state",
            });
        }
        let seq = self.state.seq;
        self.state.seq = seq.saturating_add(1);
        let pending = Pending {
            file: SavedFile {
                path: path.to_path_buf(),
                epoch: epoch + 1,
                value: logs.get(&self.monitor).unwrap_or(Value::None),
                seq,
            },
        };
        let meta = Meta {
            epoch: u64::try_from(epoch + 1).ok(),
            batch: batch.and_then(|b| u64::try_from(b + 1).ok()),
            global_step: Some(ctx.global_step),
            logs: logs.clone(),
            monitor: Some(self.monitor.clone()),
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
            // The state as it will be once this save is done.
            let mut own = self.state.clone();
            own.last_saved = Some(path.to_path_buf());
            own.saves = own.saves.saturating_add(1);
            if self.extras.retention.is_on() {
                // As retention will leave the list once this save is committed, so that a
                // resumed run carries the same state as one that never stopped.
                own.kept.retain(|f| f.path != path);
                own.kept.push(pending.file.clone());
                let keep = files_to_keep(&own.kept, &self.extras.retention, self.direction);
                let mut keep = keep.into_iter();
                own.kept.retain(|_| keep.next().unwrap_or(true));
            }
            // The other callbacks' state too, so that none resets on resume (those after this
            // one in the list have not yet seen the current epoch's end).
            let mut callbacks: serde_json::Map<String, serde_json::Value> =
                ctx.peer_states().into_iter().collect();
            if let Ok(state) = serde_json::to_value(&own) {
                callbacks.insert(self.key(), state);
            }
            values.insert("callbacks".to_owned(), serde_json::Value::Object(callbacks));
            info.insert(
                KEY_TRAINING_STATE.to_owned(),
                serde_json::Value::Object(values).to_string(),
            );
        }
        if !self.background {
            store::save_to(
                &*self.storage,
                &path.to_string_lossy(),
                kind,
                &tensors,
                &info,
                &self.options,
            )
            .map(|report| self.committed(pending, report.header_digest))??;
            return Ok(());
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
        let options = self.options.clone();
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
        // A background save counts only once it is durable (see `committed`); its failure
        // surfaces at the next hook.
        self.in_flight.push_back(pending);
        Ok(())
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
        let file = pending.file;
        self.state.last_saved = Some(file.path.clone());
        self.state.saves = self.state.saves.saturating_add(1);
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
        if !self.extras.retention.is_on() {
            return Ok(());
        }
        self.state.kept.retain(|f| f.path != file.path);
        self.state.kept.push(file);
        let keep = files_to_keep(&self.state.kept, &self.extras.retention, self.direction);
        let mut kept = Vec::with_capacity(self.state.kept.len());
        for (f, keep) in std::mem::take(&mut self.state.kept).into_iter().zip(keep) {
            if keep {
                kept.push(f);
                continue;
            }
            let digest = match self.owns(&f.path) {
                Ok(digest) => digest,
                Err(why) => {
                    // Never deleted: only files this run provably wrote may go.
                    log::warn!(target: "model_checkpoint", "retention leaves {} alone: {why}", f.path.display());
                    continue;
                }
            };
            match self.storage.delete(&f.path.to_string_lossy()) {
                Ok(()) => {
                    self.session_saved.retain(|p| *p != f.path);
                    self.session_digests.remove(&f.path);
                    let marker = self.marker(self.run_id(), &digest);
                    if let Err(e) = self.storage.delete(&marker) {
                        log::warn!(target: "model_checkpoint", "cannot remove {marker}: {e}");
                    }
                }
                Err(e) => {
                    // Left for the next round: an extra file is harmless.
                    log::warn!(target: "model_checkpoint", "cannot remove {}: {e}", f.path.display());
                    kept.push(f);
                }
            }
        }
        self.state.kept = kept;
        Ok(())
    }

    /// Waits until every background save is durable.
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

    /// Reports background saves that failed since the last hook, and tracks the ones done.
    pub(super) fn poll_background(&mut self) -> Result<(), Error> {
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
    pub(super) fn prepare_background(&mut self, ctx: &Context<'_>) -> Result<(), Error> {
        if self.writer.as_ref().is_some_and(|w| w.in_flight() > 0) {
            return Ok(());
        }
        let Ok(model) = ctx.model() else {
            return Ok(());
        };
        let mut sizes: Vec<usize> = model.weights()?.iter().map(|t| t.data.byte_len()).collect();
        if !self.save_weights_only {
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

    /// The part of the template's folder without placeholders: the folder this callback
    /// locks (`.` when the first folder level already has placeholders).
    pub(super) fn static_dir(&self) -> PathBuf {
        let parent = Path::new(&self.filepath).parent().unwrap_or(Path::new(""));
        let fixed: PathBuf = parent
            .components()
            .take_while(|c| !c.as_os_str().to_string_lossy().contains(['{', '}']))
            .collect();
        if fixed.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            fixed
        }
    }

    /// Takes the folder's lock (and clears stale temporary files) if not held yet and the
    /// folder exists; Keras creates folders only when saving, so this never creates one.
    pub(super) fn ensure_lock(&mut self) -> Result<(), Error> {
        if self.lock.is_none() {
            let dir = self.static_dir();
            if let Some(guard) = self.storage.lock(&dir.to_string_lossy())? {
                self.lock = Some(guard);
            }
        }
        Ok(())
    }

    pub(super) fn key(&self) -> String {
        format!("ModelCheckpoint({})", self.filepath)
    }
}
