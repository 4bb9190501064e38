//! Which names a run may write and delete: length limits, names the tool reserves, the run's
//! identity, and the proof of ownership that retention needs before it deletes anything.
//!
//! A checkpoint is untrusted input (a CRC is not an authentication), and so is the list of
//! files a resumed checkpoint says its run kept. Retention therefore deletes a file only if
//! it lies in this callback's own folder, is a name this callback's template could produce,
//! is a regular file, and carries this run's id in its header.

use std::path::{Component, Path, PathBuf};

use super::Engine;
use crate::store::{self, CheckpointFile, Listed, Meta, Verify, LOCK_FILE, TEMP_SUFFIX};
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
                let stale = self.marker(self.run_id(), &old);
                if let Err(e) = self.storage.delete(&stale) {
                    log::warn!(target: "model_checkpoint", "cannot remove {stale}: {e}");
                }
            }
        }
        Ok(())
    }

    /// After a resume: the checkpoint names a run; act as that run only if this folder holds
    /// that run's marker for this exact file. A forged checkpoint cannot carry one (the
    /// marker names the SHA-256 of the file's header, and lives in the folder, not the
    /// file), so its claim is dropped: this becomes a new run, which deletes nothing it did
    /// not save itself.
    pub(crate) fn confirm_run(&mut self, file: &CheckpointFile) {
        // A shard of a sharded checkpoint names its save; every rank's shard the same.
        self.resumed_from = crate::sharded::resumed_from(file);
        if self.run_confirmed {
            return;
        }
        let claimed = self.run_id().to_owned();
        let marker = self.marker(&claimed, &file.header_digest());
        if !claimed.is_empty() && self.storage.exists_as_own(&marker).unwrap_or(false) {
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

    /// Whether the tool may replace `path` (the `last` link, an interrupt save): it is free,
    /// or a checkpoint of this run.
    pub(crate) fn replaceable(&self, path: &Path) -> bool {
        let name = path.to_string_lossy();
        if !self.storage.exists(&name).unwrap_or(true) {
            return true;
        }
        CheckpointFile::open_in(&*self.storage, &name, Verify::HeaderOnly)
            .ok()
            .and_then(|f| Meta::from_info(f.info()).ok())
            .and_then(|m| m.run_id)
            .is_some_and(|id| id == self.run_id())
    }

    /// Refuses to replace a file at a name the tool manages (`last`) unless it is free, or a
    /// checkpoint of this format (the link a run keeps there): a user's own file, or
    /// another tool's, is never overwritten.
    pub(crate) fn check_replaceable(&self, path: &Path) -> Result<(), Error> {
        let name = path.to_string_lossy();
        if !self.storage.exists(&name).unwrap_or(true) {
            return Ok(());
        }
        match CheckpointFile::open_in(&*self.storage, &name, Verify::HeaderOnly) {
            Ok(f) if f.has_checksums() => Ok(()),
            Ok(_) => Err(Error::ReservedName {
                template: crate::text::shorten(&self.template, 200),
                name: crate::text::shorten(&name, 200),
                what:
                    "the link to the newest checkpoint, but it holds a file this tool did not write",
            }),
            Err(e) => Err(e),
        }
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

    fn check_reserved(&self, path: &str) -> Result<(), Error> {
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
        let text = lexical_text(&path.to_string_lossy());
        let pattern = Pattern::new(&lexical_text(&self.template)).map_err(|e| e.to_string())?;
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

    /// The newest full checkpoint that verifies among the files this callback's template
    /// could produce in its folder (sub-folders included, for templates with fields in
    /// folder names), by the epoch and step stored in them; damaged ones are skipped with a
    /// warning.
    ///
    /// # Errors
    ///
    /// [`Error::NoCheckpoint`] when there is none.
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

    pub(crate) fn latest(&self) -> Result<PathBuf, Error> {
        let dir = self.folder();
        let depth = folder_depth(&self.template, &dir);
        store::latest_full_matching(&*self.storage, &dir.to_string_lossy(), depth, &|p| {
            self.could_have_written(p).is_ok()
        })
    }
}

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

/// `text` with `.` and `..` components resolved lexically (as `Path` components, keeping a
/// leading `/`), for comparing templates and names.
fn lexical_text(text: &str) -> String {
    let absolute = text.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for c in text.split('/') {
        match c {
            "" | "." => {}
            ".." if out.last().is_some_and(|l| *l != "..") => {
                out.pop();
            }
            ".." if absolute => {}
            other => out.push(other),
        }
    }
    let joined = out.join("/");
    if absolute {
        format!("/{joined}")
    } else {
        joined
    }
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
