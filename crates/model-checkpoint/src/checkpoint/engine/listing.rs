//! What the run saved that is still there: its checkpoints in training order, the best of
//! them, the newest (`latest`), and other runs sharing the folder.

use super::Engine;
use crate::store::{self, Listed, Name};
use crate::Error;

impl Engine {
    /// The checkpoints this run saved that are still on disk, in training order (by the
    /// epoch and step stored in them): files in the callback's folder that its template could
    /// have produced and that carry its run id. What the end-of-run report and "the best
    /// checkpoint of this run" are chosen from, so that neither ever names a deleted file.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the folder cannot be listed.
    pub(crate) fn saved_checkpoints(&self) -> Result<Vec<Listed>, Error> {
        let dir = self.folder();
        let depth = self.folder_depth(&dir);
        let listed = match store::list_in(&*self.config.storage, &dir, depth) {
            Ok(listed) => listed,
            // A folder no save has made yet holds nothing of this run.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Vec::new())
            }
            Err(e) => return Err(e),
        };
        // A run whose saves are folders with an index: those, from their indexes.
        let folders = match self.config.folder_ranks() {
            Some(_) => crate::sharded::list_folders(&*self.config.storage, &dir, depth)?,
            None => Vec::new(),
        };
        let mut own: Vec<Listed> = listed
            .into_iter()
            .chain(folders)
            .filter(|l| self.could_have_written(&l.path).is_ok())
            .filter(|l| {
                l.header
                    .as_ref()
                    .is_ok_and(|h| h.meta.run_id.as_deref() == Some(self.run_id()))
            })
            .collect();
        store::sort_by_position(&mut own);
        Ok(own)
    }

    /// The best checkpoint of this run still on disk (up to the current epoch), and its
    /// monitored value: Keras's
    /// comparison for the monitor's direction, NaN never ranks, ties go to the older file
    /// (the same rule retention keeps by). With no monitored value at any save, the newest
    /// file, without a value.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the folder cannot be listed.
    pub(crate) fn best_saved(
        &self,
        monitor: &str,
        direction: crate::policy::Direction,
        current_epoch: Option<i64>,
    ) -> Result<Option<(Name, Option<f64>)>, Error> {
        // Files of this run from epochs after the current one were left by an earlier
        // attempt that went further before this one resumed from an older checkpoint: not
        // this history.
        let now = current_epoch
            .and_then(|e| u64::try_from(e + 1).ok())
            .unwrap_or(u64::MAX);
        let listed: Vec<Listed> = self
            .saved_checkpoints()?
            .into_iter()
            .filter(|l| l.position().0 <= now)
            .collect();
        let files: Vec<crate::policy::SavedFile> = listed
            .iter()
            .enumerate()
            .map(|(seq, l)| {
                let meta = l.header.as_ref().map(|h| &h.meta);
                crate::policy::SavedFile {
                    path: l.path.clone(),
                    epoch: meta
                        .ok()
                        .and_then(|m| m.epoch)
                        .and_then(|e| i64::try_from(e).ok())
                        .unwrap_or(0),
                    value: meta
                        .ok()
                        .and_then(|m| m.logs.get(monitor))
                        .unwrap_or(crate::Value::None),
                    seq: seq as u64,
                }
            })
            .collect();
        Ok(match crate::policy::best_file(&files, direction) {
            Some(best) => Some((best.path.clone(), best.value.as_f64())),
            None => files.last().map(|f| (f.path.clone(), None)),
        })
    }

    /// [`Engine::latest`] of one process's callback, plain or deduplicated: the newer of the
    /// newest file and the newest deduplicated folder holding a training state that the
    /// template could have produced (by the epoch and step each records; a file first on a
    /// tie), so that a run that changed between files and deduplicated folders (`--dedup`
    /// given or dropped on a requeue) resumes from its newest checkpoint whichever it is.
    ///
    /// # Errors
    ///
    /// [`Error::NoCheckpoint`] when there is neither; a failure to read either.
    pub(crate) fn latest_of_one_process(&self) -> Result<Name, Error> {
        // None found is no error here; a failure to read is (it may be the newest).
        let found = |searched: Result<Name, Error>| match searched {
            Ok(name) => Ok(Some(name)),
            Err(e) if e.is_nothing_to_resume() => Ok(None),
            Err(e) => Err(e),
        };
        let dir = self.folder();
        let full = |folder: &Name, index: &crate::sharded::Index| {
            self.could_have_written(folder).is_ok()
                && index
                    .model_checkpoint
                    .metadata
                    .contains_key(store::KEY_TRAINING_STATE)
        };
        let folder = found(crate::sharded::newest_sharded(
            &*self.config.storage,
            &dir,
            self.folder_depth(&dir),
            &full,
            store::Verify::Full,
        ))?;
        // Then only the files at least as new (a file first on a tie): an older one is
        // neither read whole nor named in a warning as the one resumed from.
        let floor = folder.as_ref().map(|f| self.recorded_meta(f));
        match (found(self.latest_from(floor.as_ref()))?, folder) {
            (Some(file), _) => Ok(file),
            (None, Some(folder)) => Ok(folder),
            (None, None) => Err(Error::NoCheckpoint { dir }),
        }
    }

    /// Where in training the deduplicated checkpoint `name` was saved and by which run, as
    /// its index records; the start of training when it does not read.
    fn recorded_meta(&self, name: &Name) -> (store::Position, Option<String>) {
        let index = crate::sharded::read_index(
            &*self.config.storage,
            &name.join(crate::sharded::INDEX_FILE),
        );
        index
            .ok()
            .and_then(|index| store::Meta::from_info(&index.model_checkpoint.metadata).ok())
            .map_or(((0, 0, 0), None), |m| (m.position(), m.run_id))
    }

    /// The newest sharded checkpoint of this run that its template could have produced in
    /// its folder (sub-folders included), its headers checked (each rank reads its own
    /// shard whole as it resumes). Deduplicated runs are one process's: see
    /// [`Engine::latest_of_one_process`].
    pub(crate) fn latest_sharded(&self) -> Result<Name, Error> {
        let dir = self.folder();
        let depth = self.folder_depth(&dir);
        let run = format!("{}/", self.run_id());
        crate::sharded::latest_sharded_matching(
            &*self.config.storage,
            &dir,
            depth,
            &|folder, index| {
                self.could_have_written(folder).is_ok()
                    && index.model_checkpoint.save_id.starts_with(&run)
            },
        )
    }

    /// The newest durable full checkpoint of the run that verifies: among the files this
    /// callback's template could produce in its folder (sub-folders included, versions
    /// too) and the `last` link, and the run's interrupt files, by the epoch, step and
    /// batch stored in them; damaged ones are skipped with a warning.
    ///
    /// The run is the one this callback was given ([`crate::ModelCheckpoint::with_run_id`]),
    /// else the one that wrote the newest of the template's checkpoints: an interrupt file
    /// another run left in the folder is never taken for this one's. Only files at least as
    /// new as `floor` count, when given (a position, and the run that saved there, which
    /// stands for the run when no file of it is that new).
    ///
    /// # Errors
    ///
    /// [`Error::NoCheckpoint`] when there is none.
    pub(crate) fn latest_from(
        &self,
        floor: Option<&(store::Position, Option<String>)>,
    ) -> Result<Name, Error> {
        let dir = self.folder();
        let depth = self.folder_depth(&dir);
        let last = self.last_path();
        let listed = match store::list_in(&*self.config.storage, &dir, depth) {
            Ok(listed) => listed,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoCheckpoint { dir })
            }
            Err(e) => return Err(e),
        };
        let explicit = self
            .config
            .explicit_run_id
            .then(|| self.run_id().to_owned());
        let of_run = |l: &Listed, run: &Option<String>| {
            run.is_none()
                || l.header.as_ref().ok().and_then(|h| h.meta.run_id.as_ref()) == run.as_ref()
        };
        // A file whose header does not read has no known place: it may be newer.
        let new_enough =
            |l: &Listed| l.header.is_err() || floor.is_none_or(|(at, _)| l.position() >= *at);
        let (interrupts, saves): (Vec<Listed>, Vec<Listed>) = listed
            .into_iter()
            .filter(|l| of_run(l, &explicit) && new_enough(l))
            .partition(|l| self.is_interrupt_file(&l.path));
        let saves: Vec<Listed> = saves
            .into_iter()
            .filter(|l| self.could_have_written(&l.path).is_ok() || last.as_ref() == Some(&l.path))
            .collect();
        let positions: Vec<(store::Position, Name, Option<String>)> = saves
            .iter()
            .map(|l| {
                let run = l.header.as_ref().ok().and_then(|h| h.meta.run_id.clone());
                (l.position(), l.path.clone(), run)
            })
            .collect();
        let base = match store::newest_verified_in(&*self.config.storage, &dir, saves) {
            Ok(path) => Some(path),
            Err(Error::NoCheckpoint { .. }) => None,
            Err(e) => return Err(e),
        };
        let base_at = base
            .as_ref()
            .and_then(|b| positions.iter().find(|(_, p, _)| p == b));
        let run = explicit
            .or_else(|| base_at.and_then(|(_, _, run)| run.clone()))
            .or_else(|| floor.and_then(|(_, run)| run.clone()));
        // The run's interrupt files newer than its newest save.
        let newer: Vec<Listed> = interrupts
            .into_iter()
            .filter(|l| run.is_none() || of_run(l, &run))
            .filter(|l| base_at.is_none_or(|(at, _, _)| l.position() > *at))
            .collect();
        match store::newest_verified_in(&*self.config.storage, &dir, newer) {
            Ok(path) => Ok(path),
            Err(Error::NoCheckpoint { .. }) => base.ok_or(Error::NoCheckpoint { dir }),
            Err(e) => Err(e),
        }
    }

    /// Warns, once, when a run that did not resume starts in a folder holding checkpoints
    /// of another run at names its template produces: `latest` and retention tell runs
    /// apart by the run id in the files, and a requeued job resuming `latest` there would
    /// take the other run's newest (one folder per run; or give the run id).
    pub(crate) fn warn_of_other_runs(&mut self) {
        if self.resumed || self.warned_other_runs || self.config.folder_ranks().is_some() {
            return;
        }
        self.warned_other_runs = true;
        let dir = self.folder();
        let depth = self.folder_depth(&dir);
        let Ok(listed) = store::list_in(&*self.config.storage, &dir, depth) else {
            return;
        };
        let others: Vec<String> = listed
            .iter()
            .filter(|l| self.could_have_written(&l.path).is_ok())
            .filter_map(|l| l.header.as_ref().ok()?.meta.run_id.clone())
            .filter(|id| id != self.run_id())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if let Some(first) = others.first() {
            log::warn!(
                target: "model_checkpoint",
                "{} already holds checkpoints of {} other run(s) (run {}) at names this run's template produces: this run replaces those it saves again, and `latest` (what a requeued job resumes) takes the newest of all; use a new folder for a new run, or resume the other",
                dir.display(),
                others.len(),
                crate::text::shorten(first, 64)
            );
        }
    }
}

impl Engine {
    /// How many folder levels below `dir` the template's names may lie.
    fn folder_depth(&self, dir: &Name) -> usize {
        let template_dirs = self.template_name().parent().components().count();
        template_dirs.saturating_sub(dir.components().count())
    }
}
