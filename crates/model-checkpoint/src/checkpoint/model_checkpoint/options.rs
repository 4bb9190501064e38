//! Options beyond Keras: retention, the `last` link, versions, more triggers, saving on
//! SIGTERM and SIGINT, background saves, the storage, the run's identity, and what the run
//! saved. All are off by default, so that the callback behaves exactly as Keras's unless
//! asked otherwise. Each only sets or asks the engine or the triggers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::ModelCheckpoint;
use crate::checkpoint::engine::{valid_run_id, Last};
use crate::store::{Listed, Name, Storage};
use crate::Error;

impl ModelCheckpoint {
    /// Keep only the `k` best checkpoints by the monitored value, besides the newest
    /// (Lightning's `save_top_k`). Files go only after a newer save is durable; NaN never
    /// ranks; ties keep the older. Default: keep everything, as Keras does.
    pub fn keep_best(mut self, k: usize) -> Self {
        self.engine.config.retention.keep_best = Some(k);
        self
    }

    /// Keep the `n` newest checkpoints, besides the best. Default: keep everything.
    pub fn keep_last(mut self, n: usize) -> Self {
        self.engine.config.retention.keep_last = Some(n);
        self
    }

    /// Keep every checkpoint saved in an epoch that is a multiple of `m` (1-based), whatever
    /// the other rules say. Default: off.
    pub fn keep_every_epochs(mut self, m: u64) -> Self {
        self.engine.config.retention.keep_every_epochs = Some(m);
        self
    }

    /// Keep `last.safetensors` in the template's folder pointing at the newest complete
    /// checkpoint: a hard link replaced atomically after every save (a copy where links are
    /// impossible, a server-side copy on S3; for sharded checkpoints the folder `last/`).
    /// With background saves it follows a save once that save's aftercare has run (by the
    /// next hooks, and always by `on_train_end`). Retention never removes it. Default: off.
    pub fn save_last(mut self, yes: bool) -> Self {
        self.engine.config.last = if yes { Last::Beside } else { Last::Off };
        self
    }

    /// Keep a journal beside the checkpoints ([`crate::store::JOURNAL_FILE`], CSV): one row
    /// per committed save (sequence number, epoch, batch, step, kind, path, monitored value,
    /// run id) and per file retention deleted, so that a report (`ckpt report`) can show
    /// every checkpoint the run saved, also those gone since. Written through the
    /// checkpoints' storage after each save; a journal that cannot be written is logged and
    /// never fails a save. In a sharded run rank 0 keeps it, a row per sharded checkpoint
    /// and per folder retention deleted. Default: off.
    pub fn journal(mut self, yes: bool) -> Self {
        self.engine.journal = yes.then(Default::default);
        self
    }

    /// Like [`ModelCheckpoint::save_last`], at `path`.
    pub fn save_last_as(mut self, path: impl AsRef<Path>) -> Self {
        self.engine.config.last = Last::At(Name::from(path.as_ref()));
        self
    }

    /// Replace a file whose name is taken (Keras's behaviour), or, with `false`, save as
    /// `NAME-v1.EXT`, `NAME-v2.EXT` … (Lightning's). Default: `true`.
    pub fn overwrite(mut self, yes: bool) -> Self {
        self.engine.config.overwrite = yes;
        self
    }

    /// Also attempt a save every `n` optimizer steps (beyond Keras's `save_freq`, which it
    /// leaves alone). Default: off.
    pub fn every_n_steps(mut self, n: u64) -> Self {
        self.triggers.every_n_steps = Some(n.max(1));
        self
    }

    /// Also attempt a save at the end of every `n`-th epoch (1-based). Default: off.
    pub fn every_n_epochs(mut self, n: u64) -> Self {
        self.triggers.every_n_epochs = Some(n.max(1));
        self
    }

    /// Also attempt a save at the first batch end after `interval` of wall-clock time since
    /// training began or since the last save. Default: off.
    pub fn every(mut self, interval: Duration) -> Self {
        self.triggers.every = Some(interval);
        self
    }

    /// On SIGTERM or SIGINT (Unix), finish the current step, save a full checkpoint to
    /// `interrupted.safetensors` in the template's folder (or `interrupted-RUNID.safetensors`
    /// when that name holds a file this run did not write), in the foreground after every
    /// background save in flight, wait until it is durable, and stop training with
    /// [`crate::Control::Interrupt`]. A second SIGINT ends the process at once. Default: off.
    pub fn save_on_interrupt(mut self, yes: bool) -> Self {
        self.triggers.save_on_interrupt = yes;
        self.engine.config.interrupt_saves = yes;
        self
    }

    /// With [`ModelCheckpoint::save_on_interrupt`], leave SIGTERM and SIGINT to the host
    /// program, whose own handlers deliver them through [`crate::request_interrupt`]: no
    /// handler of this crate is installed (a Python program's handlers come first, and one it
    /// sets later replaces this crate's). Default: off.
    pub fn signals_from_host(mut self, yes: bool) -> Self {
        self.triggers.signals_from_host = yes;
        self
    }

    /// The signal that stopped training, if one did.
    pub fn interrupted(&self) -> Option<&'static str> {
        self.triggers.interrupted
    }

    /// Removes this run's saves on a signal (through the deletion gate): what a completed
    /// run's `on_train_end` does, for a loop that learns only afterwards that the signal came
    /// once training was already complete (at the last epoch's end).
    pub fn retire_interrupt_saves(&mut self) {
        let key = self.key();
        self.engine.retire_interrupt_files(&key);
    }

    /// Where the save on the last signal went, once durable (`interrupted.safetensors` in
    /// the folder, or `interrupted-RUNID.safetensors`). It is not one of the run's counted
    /// saves: [`ModelCheckpoint::last_saved`] names the last of those.
    pub fn interrupt_saved(&self) -> Option<&Name> {
        self.engine.interrupt_saved.as_ref()
    }

    /// The `last` link's path, if on.
    pub fn last_path(&self) -> Option<Name> {
        self.engine.last_path()
    }

    /// Save on a background thread (beyond Keras). The training thread only copies the
    /// tensors into host memory, or, in a loop with a snapshot fence (`fit`'s) and tensors
    /// the framework can share (candle's), hands them over and the writer thread copies them
    /// while the next step computes (the optimizer step waits for that copy); a model that
    /// offers a frozen copy of itself ([`crate::Checkpointable::frozen`], burn's) hands that
    /// over, and the writer takes the tensors from it. Writing,
    /// syncing and renaming happen on the writer thread, and nothing appears at the final
    /// path before it is durable; so does what follows a save on storage (its journal row,
    /// its marker, the `last` copy, retention's deletes). A save that fails is reported by
    /// the next hook (so `fit` stops with it), and `on_train_end` waits for every save and
    /// all that follows them.
    /// In a multi-process run ([`ModelCheckpoint::sharded`]) each rank copies its shard and
    /// returns; its writer writes the shard and takes the rank's part in the commit (rank 0
    /// writes the index once every shard is there, the others wait for it), and a save
    /// counts, on every rank, once its index exists. The copy's buffers are kept for the
    /// next save (one model's worth of memory; a sharded rank's, its shard's, made at its
    /// first save; none for a model that offers a frozen copy, which holds its own
    /// tensors until written) until `on_train_end`. Default: `false`.
    pub fn background(mut self, yes: bool) -> Self {
        self.engine.config.background = yes;
        self
    }

    /// How many background saves may be in flight (each holds a copy of the tensors until
    /// written); the hook of a save beyond that waits, on the training thread, for the
    /// oldest to be written. What follows a written save (its aftercare) does not count.
    /// Default: 1 (at least 1).
    pub fn max_saves_in_flight(mut self, n: usize) -> Self {
        self.engine.config.max_in_flight = n.max(1);
        self
    }

    /// Whether saves run on a background thread.
    pub fn in_background(&self) -> bool {
        self.engine.config.background
    }

    /// Waits until every background save is durable, and what follows each (its journal
    /// row, marker, `last` copy and retention's deletes) is done.
    ///
    /// # Errors
    ///
    /// The first failed save's error.
    pub fn flush(&mut self) -> Result<(), Error> {
        self.engine.flush()
    }

    /// Ends a `fit` that ended without `on_train_end` (by an exception, which Keras tells no
    /// callback of): waits for the background saves and what follows each, as
    /// [`ModelCheckpoint::flush`], then releases the folder's lock and the signals, as
    /// `on_train_end` does, without counting the run as complete (its interrupt files
    /// stay). For a host that learns of the end only later (the Python package, at exit).
    ///
    /// # Errors
    ///
    /// The first failed save's error.
    pub fn close(&mut self) -> Result<(), Error> {
        let finished = self.engine.finish();
        self.release_signals();
        finished
    }

    /// Where checkpoints are written (beyond Keras): every file effect (saves, the `last`
    /// copy, versions, retention's deletes, the lock, listing) goes through `storage`, with
    /// the formatted paths as names. Default: [`crate::store::LocalFolder::default`], the
    /// local file system relative to the working directory.
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.engine.config.storage = storage;
        self
    }

    /// Saves sharded checkpoints in a multi-process run (beyond Keras): every process runs
    /// this callback with the same options and the same logs (so every rank makes the same
    /// decisions), and each save is a folder, the formatted template, holding every rank's
    /// shard and the index rank 0 commits (see `model_checkpoint::sharded`). The model says
    /// which of its tensors are slices or per-rank state with
    /// [`crate::Checkpointable::shard_layout`]. Only rank 0 prints, holds the folder's
    /// lock and deletes (retention acts on whole folders). Resume with
    /// [`crate::restore::restore_sharded`] from [`ModelCheckpoint::latest`].
    ///
    /// Every rank must be given the same run id ([`ModelCheckpoint::with_run_id`]: the
    /// launcher's job id, say), and the template must make a new folder per save (a field
    /// such as `{epoch}`), or `overwrite(false)` gives each save a new `NAME-vN` folder.
    /// `save_last` keeps a copy of the newest checkpoint in the folder `last` beside them.
    /// With [`ModelCheckpoint::background`], each rank's writer thread writes its shard and
    /// takes its part in the commit.
    pub fn sharded(mut self, ranks: crate::sharded::Ranks) -> Self {
        self.engine.config.ranks = Some(ranks);
        self
    }

    /// Deduplicated saves (beyond Keras): each checkpoint is a folder under its name holding
    /// `model.safetensors.index.json`, whose tensors are content-addressed blobs in
    /// `blobs/` of the callback's folder, shared by every checkpoint of the run that holds
    /// the same bytes under the same name (a frozen backbone is written once). Python's
    /// `safetensors` reads each blob, and index-aware loaders the checkpoint, unchanged.
    /// Retention deletes a checkpoint's index, then the blobs no index names that this run
    /// wrote. Saving the same name again replaces its index atomically. Restore with
    /// [`crate::restore::restore`] on the folder, or [`ModelCheckpoint::latest`].
    ///
    /// Not yet combined with background saves, a multi-process run, or saves on a signal
    /// (each refused at `on_train_begin`).
    ///
    /// ```
    /// use model_checkpoint::ModelCheckpoint;
    /// let checkpoint = ModelCheckpoint::new("ckpt/weights.{epoch:02d}.safetensors")
    ///     .dedup(true)
    ///     .keep_last(3);
    /// # let _ = checkpoint;
    /// ```
    pub fn dedup(mut self, yes: bool) -> Self {
        self.engine.config.dedup = yes;
        self
    }

    /// Compresses the blobs of deduplicated checkpoints (needs [`ModelCheckpoint::dedup`];
    /// beyond Keras): each tensor's bytes regrouped in byte planes (the exponent bytes of
    /// floats apart from the mantissa's), then zstd, losslessly; a tensor that would not
    /// shrink by 1/64 is stored plain. A compressed blob is still a verified file of this
    /// format, whose metadata says how to decode it: restores, `ckpt export`, `ckpt
    /// verify` and the Python package's `load_file` decode it (Python's `safetensors`
    /// alone reads its compressed bytes). Checked on the compressed bytes and again on the
    /// decoded ones.
    ///
    /// ```
    /// use model_checkpoint::ModelCheckpoint;
    /// let checkpoint = ModelCheckpoint::new("ckpt/e{epoch:02d}.safetensors")
    ///     .dedup(true)
    ///     .compress(true);
    /// # let _ = checkpoint;
    /// ```
    pub fn compress(mut self, yes: bool) -> Self {
        self.engine.config.compress = yes;
        self
    }

    /// The ranks' own collective (MPI, NCCL …) for sharded saves, instead of polling the
    /// storage for the shards and the index. With [`ModelCheckpoint::background`] it is
    /// called on the writer thread, concurrently with training's own collectives: see
    /// [`crate::sharded::Barrier`]. Default: none (polling, with backoff).
    pub fn shard_barrier(mut self, barrier: Arc<dyn crate::sharded::Barrier>) -> Self {
        self.engine.config.barrier = Some(barrier);
        self
    }

    /// How long a sharded save's coordinator waits for the other ranks' shards, and they for
    /// its index, before the save fails. Default: 10 minutes.
    pub fn shard_commit_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.engine.config.commit_options.timeout = timeout;
        self
    }

    /// This run's id, written into every file it saves and kept across resumes (made at
    /// the first `on_train_begin` or save).
    pub fn run_id(&self) -> &str {
        self.engine.run_id()
    }

    /// Names the run (beyond Keras): every file it saves carries `id`, and retention
    /// deletes only files that carry it. Default: a random 128-bit id made at the start of
    /// training, kept across resumes. Give one to make two runs' files equal byte for byte,
    /// or to tie a run to an outside record. A resume whose checkpoint holds another id is
    /// refused.
    ///
    /// The id is 1 to 64 lowercase hex digits; another value fails at `on_train_begin`.
    pub fn with_run_id(mut self, id: impl Into<String>) -> Self {
        self.engine.saved.run_id = Some(id.into());
        self.engine.config.explicit_run_id = true;
        self
    }

    /// Refuses, before training, a run id of the wrong shape and a template whose every
    /// name would be one the tool manages (the folder's lock file, the temporary-file
    /// pattern, the markers, the `last` link). Names that depend on the logs are checked
    /// again at each save ([`ModelCheckpoint::check_path`]). `on_train_begin` calls this.
    ///
    /// # Errors
    ///
    /// [`Error::ReservedName`] (Keras's `ValueError`), [`Error::Incompatible`] for a run id
    /// of the wrong shape and for options that do not combine.
    pub fn check_filepath(&self) -> Result<(), Error> {
        let id = self.engine.saved.run_id.as_deref();
        if let Some(id) = id.filter(|id| !valid_run_id(id)) {
            return Err(Error::Incompatible {
                key: crate::text::shorten(&self.key(), 200),
                reason: format!(
                    "run id {:?} is not 1 to 64 lowercase hex digits",
                    crate::text::shorten(id, 100)
                ),
            });
        }
        self.engine.check_template()?;
        if self.engine.config.compress && !self.engine.config.dedup {
            return Err(Error::Incompatible {
                key: crate::text::shorten(&self.key(), 200),
                reason: "compression is of deduplicated checkpoints' blobs: add dedup(true)"
                    .to_owned(),
            });
        }
        if self.engine.config.dedup {
            let refuse = |reason: &str| {
                Err(Error::Incompatible {
                    key: crate::text::shorten(&self.key(), 200),
                    reason: format!("a deduplicated save {reason}"),
                })
            };
            if self.engine.config.ranks.is_some_and(|r| r.world_size > 1) {
                return refuse("in a multi-process run is not supported yet");
            }
            if self.engine.config.background {
                return refuse("does not support background saves yet");
            }
            if self.triggers.save_on_interrupt {
                return refuse("does not support saves on a signal yet");
            }
            return Ok(());
        }
        if self.engine.config.ranks.is_some() {
            let refuse = |reason: &str| {
                Err(Error::Incompatible {
                    key: crate::text::shorten(&self.key(), 200),
                    reason: format!("a sharded save {reason}"),
                })
            };
            if !self.engine.config.explicit_run_id {
                return refuse("needs the same run id on every rank: give with_run_id");
            }
            let fixed = crate::template::Pattern::new(self.engine.config.template())
                .is_ok_and(|p| p.is_fixed());
            if fixed && self.engine.config.overwrite {
                return refuse(
                    "needs a new folder per save: put a field such as {epoch} in the template",
                );
            }
        }
        Ok(())
    }

    /// Refuses a formatted path that no file system would take, or that names something the
    /// tool manages; every save checks its path so.
    ///
    /// # Errors
    ///
    /// [`Error::NameTooLong`] (Python's `OSError`), [`Error::ReservedName`].
    pub fn check_path(&self, path: &str) -> Result<(), Error> {
        self.engine.check_path(path)
    }

    /// The checkpoints this run saved that are still on disk, in training order (by the
    /// epoch and step stored in them): files in the callback's folder that its template could
    /// have produced and that carry its run id. What the end-of-run report and "the best
    /// checkpoint of this run" are chosen from, so that neither ever names a deleted file.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the folder cannot be listed.
    pub fn saved_checkpoints(&self) -> Result<Vec<Listed>, Error> {
        self.engine.saved_checkpoints()
    }

    /// The best checkpoint of this run still on disk (up to the current epoch), and its
    /// monitored value: Keras's comparison for the monitor's direction, NaN never ranks,
    /// ties go to the older file (the same rule retention keeps by). With no monitored
    /// value at any save, the newest file, without a value.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the folder cannot be listed.
    pub fn best_saved(&self) -> Result<Option<(Name, Option<f64>)>, Error> {
        self.engine.best_saved(
            &self.decisions.monitor,
            self.decisions.direction,
            self.decisions.current_epoch,
        )
    }

    /// The newest full checkpoint that verifies among those this callback's template could
    /// produce in its folder (sub-folders included, for templates with fields in folder
    /// names), by the epoch and step stored in them; damaged ones are skipped with a
    /// warning. For one process, files and deduplicated checkpoints' folders both count,
    /// whichever this callback writes (a file first on a tie); for a sharded run, its
    /// sharded checkpoints.
    ///
    /// # Errors
    ///
    /// [`Error::NoCheckpoint`] when there is none.
    pub fn latest(&self) -> Result<Name, Error> {
        match self.engine.config.folder_ranks() {
            Some(_) if !self.engine.config.dedup => self.engine.latest_sharded(),
            _ => self.engine.latest_of_one_process(),
        }
    }

    /// The folder this callback saves into and locks: the template's folders up to the
    /// first one with a field (`.` when there is none).
    pub fn folder(&self) -> Name {
        self.engine.folder()
    }
}
