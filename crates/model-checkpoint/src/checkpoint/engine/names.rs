//! Which names a run may write and delete: length limits, names the tool reserves, the run's
//! identity, and the proof of ownership that retention needs before it deletes anything.
//!
//! A checkpoint is untrusted input (a CRC is not an authentication), and so is the list of
//! files a resumed checkpoint says its run kept. Retention therefore deletes a file only if
//! it lies in this callback's own folder, is a name this callback's template could produce,
//! is a regular file, and carries this run's id in its header.

use std::path::{Component, Path, PathBuf};

use super::Engine;
use crate::store::{self, gate, CheckpointFile, Listed, Meta, Verify, LOCK_FILE, TEMP_SUFFIX};
use crate::template::Pattern;
use crate::Error;

/// The longest file name most file systems take, in bytes.
pub(crate) const MAX_NAME_BYTES: usize = 255;
/// The longest path Linux takes, in bytes.
pub(crate) const MAX_PATH_BYTES: usize = 4096;

/// Refuses a formatted path that no file system would take, before anything is created.
pub(crate) fn check_length(path: &str) -> Result<(), Error> {
    let too_long = |reason: String| Error::NameTooLong {
        name: crate::text::shorten(path, 200),
        reason,
    };
    if path.is_empty() {
        return Err(too_long("it is empty".to_owned()));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(too_long(format!(
            "{} bytes, more than the {MAX_PATH_BYTES} a path may have",
            path.len()
        )));
    }
    if let Some(long) = path.split('/').find(|c| c.len() > MAX_NAME_BYTES) {
        return Err(too_long(format!(
            "a component of {} bytes, more than the {MAX_NAME_BYTES} a file name may have",
            long.len()
        )));
    }
    Ok(())
}

/// A fresh run id: 128 random bits in hex, from the standard library's per-process random
/// keys mixed with the time and process id.
fn new_run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut a = std::collections::hash_map::RandomState::new().build_hasher();
    a.write_u128(now);
    a.write_u32(std::process::id());
    let first = a.finish();
    let mut b = std::collections::hash_map::RandomState::new().build_hasher();
    b.write_u64(first);
    format!("{first:016x}{:016x}", b.finish())
}

/// Whether `id` looks like a run id this crate makes (1 to 64 lowercase hex digits).
pub(crate) fn valid_run_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `NAME-vN.EXT` back to `NAME.EXT` (the names `overwrite(false)` makes).
fn without_version(path: &str) -> Option<String> {
    let (dir, name) = path.rsplit_once('/').map_or(("", path), |(d, n)| (d, n));
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let (base, version) = stem.rsplit_once("-v")?;
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let joined = format!("{base}{ext}");
    Some(if dir.is_empty() && !path.contains('/') {
        joined
    } else {
        format!("{dir}/{joined}")
    })
}

impl Engine {
    /// This run's id, written into every file it saves and kept across resumes (made at
    /// the first `on_train_begin` or save).
    pub(crate) fn run_id(&self) -> &str {
        self.saved.run_id.as_deref().unwrap_or("")
    }

    /// Names the run (see `ModelCheckpoint::with_run_id`).
    pub(crate) fn set_run_id(&mut self, id: String) {
        self.saved.run_id = Some(id);
        self.explicit_run_id = true;
    }

    pub(crate) fn ensure_run_id(&mut self) {
        if self.saved.run_id.is_none() {
            self.saved.run_id = Some(new_run_id());
            self.run_confirmed = true;
        }
    }

    /// The marker that proves this run wrote the file whose head has `digest`.
    pub(crate) fn marker(&self, id: &str, digest: &[u8; 32]) -> String {
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        let name = format!("{}{id}.{hex}", store::MARKER_PREFIX);
        let dir = self.folder();
        if dir == Path::new(".") {
            name
        } else {
            format!("{}/{name}", dir.to_string_lossy())
        }
    }

    /// Leaves the marker of a file this run just committed at `path`, and removes the
    /// marker of the file it replaced there, if this callback wrote that one.
    pub(crate) fn mark_written(&mut self, path: &Path, digest: [u8; 32]) -> Result<(), Error> {
        let marker = self.marker(self.run_id(), &digest);
        self.storage.put_if_absent(&marker, b"")?;
        if let Some(old) = self.session_digests.insert(path.to_path_buf(), digest) {
            if old != digest {
                self.delete_marker(&old);
            }
        }
        Ok(())
    }

    /// Removes this run's marker for the file whose head has `digest` (through the
    /// deletion gate); a failure is logged: a stale marker only ever lets retention delete
    /// a file this run wrote.
    pub(crate) fn delete_marker(&self, digest: &[u8; 32]) {
        let marker = self.marker(self.run_id(), digest);
        let claim = gate::Claim::Marker {
            run_id: self.run_id(),
        };
        if let Err(e) = gate::delete(&*self.storage, &marker, claim) {
            log::warn!(target: "model_checkpoint", "cannot remove {marker}: {e}");
        }
    }

    /// After a resume: the checkpoint names a run; act as that run only if the file is one
    /// a run of this tool wrote, proved by the marker its writer left for this exact file in
    /// its folder (or a folder above). A forged checkpoint cannot carry one (the marker names
    /// the SHA-256 of the file's header, and lives in the folder, not the file), so its claim
    /// is dropped: this becomes a new run, which deletes nothing it did not save itself.
    ///
    /// The writer may be another callback of the same list (a full checkpoint holds every
    /// callback's state): the file is authentic, and so is each state in it.
    pub(crate) fn confirm_run(&mut self, file: &CheckpointFile) {
        // A shard of a sharded checkpoint names its save; every rank's shard the same.
        self.resumed_from = crate::sharded::resumed_from(file);
        if self.run_confirmed {
            return;
        }
        let claimed = self.run_id().to_owned();
        if !claimed.is_empty() && self.is_authentic(file) {
            self.run_confirmed = true;
            return;
        }
        let fresh = new_run_id();
        log::warn!(
            target: "model_checkpoint",
            "cannot confirm that run {} wrote {} in {}: continuing as a new run {fresh}; retention will not delete files from before the resume",
            crate::text::shorten(&claimed, 64),
            file.path().display(),
            self.folder().display()
        );
        self.saved.run_id = Some(fresh);
        self.saved.kept.clear();
        self.run_confirmed = true;
    }

    /// Whether the run named in `file`'s header left its marker for this exact file in the
    /// callback's folder, or in the file's folder or one above it.
    fn is_authentic(&self, file: &CheckpointFile) -> bool {
        let Some(writer) = Meta::from_info(file.info())
            .ok()
            .and_then(|m| m.run_id)
            .filter(|id| valid_run_id(id))
        else {
            return false;
        };
        let digest = file.header_digest();
        let own = self.marker(&writer, &digest);
        let file_name = own.rsplit('/').next().unwrap_or(&own).to_owned();
        let path = store::normalize(&file.path().to_string_lossy());
        let mut folders = vec![own];
        let mut dir = path.as_str();
        while let Some((parent, _)) = dir.rsplit_once('/') {
            folders.push(format!("{parent}/{file_name}"));
            dir = parent;
        }
        if !path.starts_with('/') && !path.contains("://") {
            folders.push(file_name);
        }
        folders
            .iter()
            .any(|marker| self.storage.exists_as_own(marker).unwrap_or(false))
    }

    /// Takes the state a checkpoint says the engine had. It is untrusted input: a run id
    /// of the wrong shape, or another than the one given, is refused (the reason is
    /// returned), and files the template could not have produced in this folder are not
    /// tracked. The run id stays a claim until [`Engine::confirm_run`] checks it.
    pub(crate) fn restore(&mut self, mut saved: super::Saved) -> Result<(), String> {
        if let Some(id) = &saved.run_id {
            if !valid_run_id(id) {
                return Err(format!(
                    "run id {:?} is not 1 to 64 lowercase hex digits",
                    crate::text::shorten(id, 100)
                ));
            }
            if self.explicit_run_id && self.saved.run_id.as_ref() != Some(id) {
                return Err(format!(
                    "the checkpoint belongs to run {id}, not to run {}",
                    self.run_id()
                ));
            }
        }
        let (kept, foreign): (Vec<_>, Vec<_>) = std::mem::take(&mut saved.kept)
            .into_iter()
            .partition(|f| self.could_have_written(&f.path).is_ok());
        for f in foreign {
            log::warn!(
                target: "model_checkpoint",
                "ignoring {} from the checkpoint's list of kept files: this callback could not have written it",
                crate::text::shorten(&f.path.to_string_lossy(), 200)
            );
        }
        saved.kept = kept;
        if saved
            .last_saved
            .as_deref()
            .is_some_and(|p| self.could_have_written(p).is_err())
        {
            saved.last_saved = None;
        }
        // Until `confirm_run` checks it against the folder, the restored run id is a claim:
        // retention deletes only files this engine saved itself.
        self.run_confirmed = self.explicit_run_id;
        if self.explicit_run_id {
            saved.run_id = self.saved.run_id.clone();
        }
        self.saved = saved;
        self.resumed = true;
        Ok(())
    }

    /// Refuses, before training, a template whose every name would be one the engine
    /// manages (the folder's lock file, the temporary-file pattern, the markers, the `last`
    /// link). Names that depend on the logs are checked again at each save
    /// ([`Engine::check_path`]).
    pub fn check_template(&self) -> Result<(), Error> {
        // A malformed template fails at the first save with Keras's error, as in Keras.
        let Ok(pattern) = Pattern::new(&self.template) else {
            return Ok(());
        };
        let name = pattern.file_name();
        let reserved = |reserved: &str, what| Error::ReservedName {
            template: crate::text::shorten(&self.template, 200),
            name: reserved.to_owned(),
            what,
        };
        if name.always_ends_with(TEMP_SUFFIX) {
            return Err(reserved(
                &format!("*{TEMP_SUFFIX}"),
                "the temporary files of unfinished saves",
            ));
        }
        if name.always_ends_with(LOCK_FILE) && name.matches(LOCK_FILE) {
            return Err(reserved(LOCK_FILE, "the folder's lock file"));
        }
        if pattern.is_fixed() && name.matches(store::HISTORY_FILE) {
            return Err(reserved(
                store::HISTORY_FILE,
                "the training history ckpt train keeps beside its checkpoints",
            ));
        }
        if self
            .template
            .rsplit('/')
            .next()
            .is_some_and(|n| n.starts_with(store::MARKER_PREFIX))
        {
            return Err(reserved(
                &format!("{}*", store::MARKER_PREFIX),
                "the markers that prove which run wrote a file",
            ));
        }
        if self.interrupt_saves
            && pattern.is_fixed()
            && self.has_interrupt_name(&store::normalize(&self.template))
        {
            return Err(reserved(
                INTERRUPT_FILE,
                "the saves on a signal (save_on_interrupt)",
            ));
        }
        // A template that always produces the `last` name; one that only may is checked at
        // each save.
        if let Some(last) = self.last_path() {
            if pattern.is_fixed() && same_path(&last, Path::new(&self.template)) {
                return Err(reserved(
                    &last.to_string_lossy(),
                    "the link to the newest checkpoint (save_last)",
                ));
            }
        }
        Ok(())
    }

    /// Refuses to replace a file at a name the tool manages (`last`) unless it is free, or a
    /// checkpoint this tool wrote (the link a run keeps there): a user's own file, or
    /// another tool's, is never overwritten (the deletion gate decides).
    pub(crate) fn check_replaceable(&self, path: &Path) -> Result<(), Error> {
        gate::check_replace(
            &*self.storage,
            &path.to_string_lossy(),
            gate::Claim::ToolCheckpoint,
        )
    }

    /// Refuses a formatted path that no file system would take, or that names something the
    /// tool manages; every save checks its path so.
    ///
    /// # Errors
    ///
    /// [`Error::NameTooLong`] (Python's `OSError`), [`Error::ReservedName`].
    pub(crate) fn check_path(&self, path: &str) -> Result<(), Error> {
        check_length(path)?;
        self.check_reserved(path)
    }

    /// Refuses a formatted path that names something the tool manages (see
    /// [`Engine::check_template`]).
    pub(crate) fn check_reserved(&self, path: &str) -> Result<(), Error> {
        let name = path.rsplit('/').next().unwrap_or(path);
        let what = if name == LOCK_FILE {
            Some("the folder's lock file")
        } else if name == store::HISTORY_FILE {
            Some("the training history ckpt train keeps beside its checkpoints")
        } else if name.starts_with(store::MARKER_PREFIX) {
            Some("the markers that prove which run wrote a file")
        } else if name.ends_with(TEMP_SUFFIX) {
            Some("the temporary files of unfinished saves")
        } else if self
            .last_path()
            .is_some_and(|last| same_path(&last, Path::new(path)))
        {
            Some("the link to the newest checkpoint (save_last)")
        } else if self.interrupt_saves && self.has_interrupt_name(path) {
            Some("the saves on a signal (save_on_interrupt)")
        } else {
            None
        };
        match what {
            Some(what) => Err(Error::ReservedName {
                template: crate::text::shorten(&self.template, 200),
                name: crate::text::shorten(path, 200),
                what,
            }),
            None => Ok(()),
        }
    }

    /// Whether `path` is a name this callback's template could have produced, inside its
    /// own folder; a lexical check, made on paths read back from a checkpoint.
    pub(crate) fn could_have_written(&self, path: &Path) -> Result<(), String> {
        // Both sides with `.` and `..` resolved as names are (a field never holds a `/`, so
        // a path with components the template lacks cannot match).
        let text = store::normalize(&path.to_string_lossy());
        let pattern = Pattern::new(&store::normalize(&self.template)).map_err(|e| e.to_string())?;
        let matches =
            pattern.matches(&text) || without_version(&text).is_some_and(|p| pattern.matches(&p));
        if !matches {
            return Err(format!(
                "the filepath template {:?} could not have produced it",
                crate::text::shorten(&self.template, 200)
            ));
        }
        Ok(())
    }

    /// Proves that retention may delete `path`: this run wrote it (see the module's
    /// documentation).
    pub(crate) fn owns(&self, path: &Path) -> Result<[u8; 32], String> {
        self.could_have_written(path)?;
        let name = path.to_string_lossy();
        let folder = self.folder();
        if !self.storage.contains(&folder.to_string_lossy(), &name) {
            return Err(format!(
                "it lies outside the checkpoint folder {}",
                folder.display()
            ));
        }
        // Opening refuses anything but a regular file (or an object).
        let file = CheckpointFile::open_in(&*self.storage, &name, Verify::HeaderOnly)
            .map_err(|e| e.to_string())?;
        let id = Meta::from_info(file.info())?.run_id;
        if id.as_deref() != Some(self.run_id()) || self.run_id().is_empty() {
            return Err("it does not carry this run's id".to_owned());
        }
        let digest = file.header_digest();
        if self.session_saved.contains(path) {
            return Ok(digest);
        }
        // Saved before this callback was made: only a confirmed run, and only with the
        // marker it left for this exact file.
        if !self.run_confirmed {
            return Err("the run this callback resumed is not confirmed".to_owned());
        }
        let marker = self.marker(self.run_id(), &digest);
        if !self.storage.exists_as_own(&marker).unwrap_or(false) {
            return Err("this run left no marker for it".to_owned());
        }
        Ok(digest)
    }

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
        let depth = folder_depth(&self.template, &dir);
        let dir_name = dir.to_string_lossy();
        let listed = match store::list_in(&*self.storage, &dir_name, depth) {
            Ok(listed) => listed,
            // A folder no save has made yet holds nothing of this run.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Vec::new())
            }
            Err(e) => return Err(e),
        };
        let mut own: Vec<Listed> = listed
            .into_iter()
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
}

impl Engine {
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
    ) -> Result<Option<(PathBuf, Option<f64>)>, Error> {
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

    /// The newest sharded checkpoint of this run that its template could have produced in
    /// its folder (sub-folders included).
    pub(crate) fn latest_sharded(&self) -> Result<PathBuf, Error> {
        let dir = self.folder();
        let depth = folder_depth(&self.template, &dir);
        let run = format!("{}/", self.run_id());
        crate::sharded::latest_sharded_matching(
            &*self.storage,
            &dir.to_string_lossy(),
            depth,
            &|folder, index| {
                self.could_have_written(Path::new(folder)).is_ok()
                    && index.model_checkpoint.save_id.starts_with(&run)
            },
        )
        .map(PathBuf::from)
    }

    /// The newest durable full checkpoint of the run that verifies: among the files this
    /// callback's template could produce in its folder (sub-folders included, versions
    /// too) and the `last` link, and the run's interrupt files, by the epoch, step and
    /// batch stored in them; damaged ones are skipped with a warning.
    ///
    /// The run is the one this callback was given ([`crate::ModelCheckpoint::with_run_id`]),
    /// else the one that wrote the newest of the template's checkpoints: an interrupt file
    /// another run left in the folder is never taken for this one's.
    ///
    /// # Errors
    ///
    /// [`Error::NoCheckpoint`] when there is none.
    pub(crate) fn latest(&self) -> Result<PathBuf, Error> {
        let dir = self.folder();
        let dir_name = dir.to_string_lossy();
        let depth = folder_depth(&self.template, &dir);
        let last = self
            .last_path()
            .map(|p| store::normalize(&p.to_string_lossy()));
        let listed = match store::list_in(&*self.storage, &dir_name, depth) {
            Ok(listed) => listed,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoCheckpoint { dir })
            }
            Err(e) => return Err(e),
        };
        let explicit = self.explicit_run_id.then(|| self.run_id().to_owned());
        let of_run = |l: &Listed, run: &Option<String>| {
            run.is_none()
                || l.header.as_ref().ok().and_then(|h| h.meta.run_id.as_ref()) == run.as_ref()
        };
        let (interrupts, saves): (Vec<Listed>, Vec<Listed>) = listed
            .into_iter()
            .filter(|l| of_run(l, &explicit))
            .partition(|l| self.is_interrupt_file(&l.path));
        let saves: Vec<Listed> = saves
            .into_iter()
            .filter(|l| {
                self.could_have_written(&l.path).is_ok()
                    || last.as_deref() == Some(store::normalize(&l.path.to_string_lossy()).as_str())
            })
            .collect();
        let positions: Vec<(store::Position, PathBuf, Option<String>)> = saves
            .iter()
            .map(|l| {
                let run = l.header.as_ref().ok().and_then(|h| h.meta.run_id.clone());
                (l.position(), l.path.clone(), run)
            })
            .collect();
        let base = match store::newest_verified_in(&*self.storage, &dir_name, saves) {
            Ok(path) => Some(path),
            Err(Error::NoCheckpoint { .. }) => None,
            Err(e) => return Err(e),
        };
        let base_at = base
            .as_ref()
            .and_then(|b| positions.iter().find(|(_, p, _)| p == b));
        let run = explicit.or_else(|| base_at.and_then(|(_, _, run)| run.clone()));
        // The run's interrupt files newer than its newest save.
        let newer: Vec<Listed> = interrupts
            .into_iter()
            .filter(|l| run.is_none() || of_run(l, &run))
            .filter(|l| base_at.is_none_or(|(at, _, _)| l.position() > *at))
            .collect();
        match store::newest_verified_in(&*self.storage, &dir_name, newer) {
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
        if self.resumed || self.warned_other_runs || self.ranks.is_some() {
            return;
        }
        self.warned_other_runs = true;
        let dir = self.folder();
        let depth = folder_depth(&self.template, &dir);
        let Ok(listed) = store::list_in(&*self.storage, &dir.to_string_lossy(), depth) else {
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

    /// Where a save on a signal goes: `interrupted.safetensors` in the callback's folder
    /// when it is free or this run's, else `interrupted-RUNID.safetensors`; never another
    /// run's file or a user's (the deletion gate checks).
    ///
    /// # Errors
    ///
    /// [`Error::NotOurs`] when both names hold files this run did not write.
    pub(crate) fn interrupt_path(&self) -> Result<PathBuf, Error> {
        let claim = gate::Claim::RunCheckpoint {
            run_id: self.run_id(),
            digest: None,
        };
        let [shared, own] = self.interrupt_names();
        if gate::check_replace(&*self.storage, &shared, claim).is_ok() {
            return Ok(PathBuf::from(shared));
        }
        gate::check_replace(&*self.storage, &own, claim)?;
        Ok(PathBuf::from(own))
    }

    /// The two names this run's saves on a signal may take (see
    /// [`Engine::interrupt_path`]).
    fn interrupt_names(&self) -> [String; 2] {
        let dir = self.folder();
        let join = |file: &str| store::normalize(&format!("{}/{file}", dir.to_string_lossy()));
        [
            join(INTERRUPT_FILE),
            join(&format!("interrupted-{}.safetensors", self.run_id())),
        ]
    }

    /// Whether `path` is an interrupt file of any run in this callback's folder
    /// (`interrupted.safetensors`, `interrupted-RUNID.safetensors`).
    ///
    /// A name the template itself produces is the template's, never an interrupt file (and
    /// with saves on a signal such a template is refused: see [`Engine::check_reserved`]).
    pub(crate) fn is_interrupt_file(&self, path: &Path) -> bool {
        self.has_interrupt_name(&path.to_string_lossy()) && self.could_have_written(path).is_err()
    }

    /// Whether `path` is, by its name alone, where a save on a signal goes in this folder.
    fn has_interrupt_name(&self, path: &str) -> bool {
        let path = store::normalize(path);
        let (dir, file) = path.rsplit_once('/').unwrap_or((".", path.as_str()));
        if store::normalize(dir) != store::normalize(&self.folder().to_string_lossy()) {
            return false;
        }
        store::is_interrupt_name(file)
    }

    /// Removes this run's interrupt files once the run has completed: the run's own final
    /// checkpoints are then what `latest` must take, not a point it trained past.
    pub(crate) fn retire_interrupt_files(&mut self) {
        let claim = gate::Claim::RunCheckpoint {
            run_id: self.run_id(),
            digest: None,
        };
        for name in self.interrupt_names() {
            if self.could_have_written(Path::new(&name)).is_ok() {
                // The template's own file, not a save on a signal.
                continue;
            }
            match gate::delete(&*self.storage, &name, claim) {
                Ok(()) | Err(Error::NotOurs { .. }) => {}
                Err(e) => log::warn!(target: "model_checkpoint", "cannot remove {name}: {e}"),
            }
        }
    }
}

/// The name a save on a signal takes when it is free (see [`Engine::interrupt_path`]).
pub(crate) const INTERRUPT_FILE: &str = store::INTERRUPT_FILE;

/// How many folder levels below `dir` the template's names may lie.
fn folder_depth(template: &str, dir: &Path) -> usize {
    let template_dirs = Path::new(template)
        .parent()
        .map_or(0, |p| p.components().count());
    let fixed = if dir == Path::new(".") {
        0
    } else {
        dir.components().count()
    };
    template_dirs.saturating_sub(fixed)
}

/// Whether two paths name the same file, lexically (the file need not exist yet).
fn same_path(a: &Path, b: &Path) -> bool {
    let norm = |p: &Path| -> PathBuf {
        p.components()
            .filter(|c| !matches!(c, Component::CurDir))
            .collect()
    };
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_strip_back_to_the_template_name() {
        assert_eq!(without_version("ck/w-v3.st").as_deref(), Some("ck/w.st"));
        assert_eq!(without_version("w-v12").as_deref(), Some("w"));
        assert_eq!(without_version("ck/w-vx.st"), None);
        assert!(valid_run_id("0123abcd") && !valid_run_id("../x") && !valid_run_id(""));
    }
}
