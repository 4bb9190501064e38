//! Which names a run may write: length limits, the names the tool reserves (the lock, temporary
//! files, markers, `last`, the saves on a signal), the names a template could have produced,
//! and the versions `overwrite(false)` makes.

use super::Engine;
use crate::store::{self, gate, Name, LOCK_FILE, TEMP_SUFFIX};
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
    /// Refuses, before training, a template whose every name would be one the engine
    /// manages (the folder's lock file, the temporary-file pattern, the markers, the `last`
    /// link). Names that depend on the logs are checked again at each save
    /// ([`Engine::check_path`]).
    pub fn check_template(&self) -> Result<(), Error> {
        // A malformed template fails at the first save with Keras's error, as in Keras.
        let Ok(pattern) = Pattern::new(&self.config.template) else {
            return Ok(());
        };
        let name = pattern.file_name();
        let reserved = |reserved: &str, what| Error::ReservedName {
            template: crate::text::shorten(&self.config.template, 200),
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
            .config
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
        if self.config.interrupt_saves
            && pattern.is_fixed()
            && self.has_interrupt_name(&self.template_name())
        {
            return Err(reserved(
                INTERRUPT_FILE,
                "the saves on a signal (save_on_interrupt)",
            ));
        }
        // A template that always produces the `last` name; one that only may is checked at
        // each save.
        if let Some(last) = self.last_path() {
            if pattern.is_fixed() && last == self.template_name() {
                return Err(reserved(
                    last.as_str(),
                    "the link to the newest checkpoint (save_last)",
                ));
            }
        }
        Ok(())
    }

    /// Refuses to replace a file at a name the tool manages (`last`) unless it is free, or a
    /// checkpoint this tool wrote (the link a run keeps there): a user's own file, or
    /// another tool's, is never overwritten (the deletion gate decides).
    pub(crate) fn check_replaceable(&self, path: &Name) -> Result<(), Error> {
        gate::check_replace(&*self.config.storage, path, gate::Claim::ToolCheckpoint)
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
        let normal = Name::from(path);
        let name = path.rsplit('/').next().unwrap_or(path);
        let what = if name == LOCK_FILE {
            Some("the folder's lock file")
        } else if name == store::HISTORY_FILE {
            Some("the training history ckpt train keeps beside its checkpoints")
        } else if name.starts_with(store::MARKER_PREFIX) {
            Some("the markers that prove which run wrote a file")
        } else if name.ends_with(TEMP_SUFFIX) {
            Some("the temporary files of unfinished saves")
        } else if self.last_path().is_some_and(|last| last == normal) {
            Some("the link to the newest checkpoint (save_last)")
        } else if self.config.interrupt_saves && self.has_interrupt_name(&normal) {
            Some("the saves on a signal (save_on_interrupt)")
        } else if self.config.dedup
            && normal.starts_with(&crate::sharded::blobs::blobs_dir(&self.folder()))
        {
            Some("the blobs of deduplicated checkpoints (dedup)")
        } else {
            None
        };
        match what {
            Some(what) => Err(Error::ReservedName {
                template: crate::text::shorten(&self.config.template, 200),
                name: crate::text::shorten(path, 200),
                what,
            }),
            None => Ok(()),
        }
    }

    /// Whether `path` is a name this callback's template could have produced, inside its
    /// own folder; a lexical check, made on paths read back from a checkpoint.
    pub(crate) fn could_have_written(&self, path: &Name) -> Result<(), String> {
        // Both sides with `.` and `..` resolved as names are (a field never holds a `/`, so
        // a path with components the template lacks cannot match).
        let text = path.as_str();
        // A name no save could have had is refused before the match, whose work grows with
        // the name's length (names come from restored states, which are untrusted).
        check_length(text).map_err(|e| e.to_string())?;
        let pattern = Pattern::new(self.template_name().as_str()).map_err(|e| e.to_string())?;
        let matches =
            pattern.matches(text) || without_version(text).is_some_and(|p| pattern.matches(&p));
        if !matches {
            return Err(format!(
                "the filepath template {:?} could not have produced it",
                crate::text::shorten(&self.config.template, 200)
            ));
        }
        Ok(())
    }
}

impl Engine {
    /// Where a save on a signal goes: `interrupted.safetensors` in the callback's folder
    /// when it is free or this run's, else `interrupted-RUNID.safetensors`; never another
    /// run's file or a user's (the deletion gate checks).
    ///
    /// # Errors
    ///
    /// [`Error::NotOurs`] when both names hold files this run did not write.
    pub(crate) fn interrupt_path(&mut self) -> Result<Name, Error> {
        let claim = gate::Claim::RunCheckpoint {
            run_id: self.run_id(),
            digest: None,
        };
        let [shared, own] = self.interrupt_names();
        let path = if gate::check_replace(&*self.config.storage, &shared, claim).is_ok() {
            shared
        } else {
            gate::check_replace(&*self.config.storage, &own, claim)?;
            own
        };
        // A save on a signal of an earlier process of this run, about to be replaced: its
        // marker is then stale, as for a file this process saved there (see `aftercare`).
        if !self.session_digests.contains_key(&path) {
            if let Some(digest) = self.header_of(&path).as_ref().and_then(own_marker) {
                self.session_digests.insert(path.clone(), digest);
            }
        }
        Ok(path)
    }

    /// The file at `path`, its header read, if it reads.
    fn header_of(&self, path: &Name) -> Option<store::CheckpointFile> {
        store::CheckpointFile::open_in(&*self.config.storage, path, store::Verify::HeaderOnly).ok()
    }

    /// The two names this run's saves on a signal may take (see
    /// [`Engine::interrupt_path`]).
    fn interrupt_names(&self) -> [Name; 2] {
        let dir = self.folder();
        [
            dir.join(INTERRUPT_FILE),
            dir.join(&format!("interrupted-{}.safetensors", self.run_id())),
        ]
    }

    /// Whether `path` is an interrupt file of any run in this callback's folder
    /// (`interrupted.safetensors`, `interrupted-RUNID.safetensors`).
    ///
    /// A name the template itself produces is the template's, never an interrupt file (and
    /// with saves on a signal such a template is refused: see [`Engine::check_reserved`]).
    pub(crate) fn is_interrupt_file(&self, path: &Name) -> bool {
        self.has_interrupt_name(path) && self.could_have_written(path).is_err()
    }

    /// Whether `path` is, by its name alone, where a save on a signal goes in this folder.
    fn has_interrupt_name(&self, path: &Name) -> bool {
        path.parent() == self.folder() && path.file_name().is_some_and(store::is_interrupt_name)
    }

    /// Removes this run's interrupt files once the run has completed: the run's own final
    /// checkpoints are then what `latest` must take, not a point it trained past. The
    /// journal, when kept, gets a `deleted` row for each, matching its `saved` row (the
    /// sequence number is the one the callback `key`'s state in the file holds).
    pub(crate) fn retire_interrupt_files(&mut self, key: &str) {
        let claim = gate::Claim::RunCheckpoint {
            run_id: self.run_id(),
            digest: None,
        };
        for name in self.interrupt_names() {
            if self.could_have_written(&name).is_ok() {
                // The template's own file, not a save on a signal.
                continue;
            }
            // Its marker goes with it, where it has one of its own, and its journal row.
            let file = self.header_of(&name);
            let own_marker = file.as_ref().and_then(own_marker);
            let row = file
                .filter(|_| self.journal.is_some())
                .and_then(|file| as_saved(&file, key));
            match gate::delete(&*self.config.storage, &name, claim) {
                Ok(()) => {
                    if let Some(digest) = own_marker {
                        self.delete_marker(&digest);
                    }
                    if let Some((journal, file, row)) =
                        row.and_then(|saved| self.journal_entry("deleted", &saved, None))
                    {
                        journal.record(&*self.config.storage, &file, &row);
                    }
                }
                Err(Error::NotOurs { .. }) => {}
                Err(e) => log::warn!(target: "model_checkpoint", "cannot remove {name}: {e}"),
            }
        }
    }
}

/// The digest naming the marker of a save on a signal, if it has one of its own: its header
/// names the signal, which keeps the header, and so its marker (named by the header's
/// digest), apart from a regular save's taken at the same point. An earlier version's save
/// on a signal names none and may share such a save's marker, which retention still needs.
fn own_marker(file: &store::CheckpointFile) -> Option<[u8; 32]> {
    file.meta()
        .is_ok_and(|meta| meta.signal.is_some())
        .then(|| file.header_digest())
}

/// A save on a signal as the journal recorded it: its epoch, monitored value and sequence
/// number, from its header (the callback `key`'s state holds the number, which a save on a
/// signal takes without counting it).
fn as_saved(file: &store::CheckpointFile, key: &str) -> Option<crate::policy::SavedFile> {
    let meta = file.meta().ok()?;
    let seq = file
        .training_state()
        .ok()??
        .callbacks
        .get(key)?
        .get("seq")?
        .as_u64()?;
    let value = meta
        .monitor
        .as_ref()
        .and_then(|m| meta.logs.get(m))
        .unwrap_or(crate::Value::None);
    Some(crate::policy::SavedFile {
        path: file.path().clone(),
        epoch: i64::try_from(meta.epoch?).ok()?,
        value,
        seq,
    })
}

/// The name a save on a signal takes when it is free (see [`Engine::interrupt_path`]).
pub(crate) const INTERRUPT_FILE: &str = store::INTERRUPT_FILE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_strip_back_to_the_template_name() {
        assert_eq!(without_version("ck/w-v3.st").as_deref(), Some("ck/w.st"));
        assert_eq!(without_version("w-v12").as_deref(), Some("w"));
        assert_eq!(without_version("ck/w-vx.st"), None);
    }
}
