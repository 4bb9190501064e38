//! The run's identity and the proof of ownership that retention needs before it deletes
//! anything.
//!
//! A checkpoint is untrusted input (a CRC is not an authentication), and so is the list of
//! files a resumed checkpoint says its run kept. Retention therefore deletes a file only if
//! it lies in this callback's own folder, is a name this callback's template could produce,
//! is a regular file, carries this run's id in its header, and was saved by this engine or
//! has the marker its run left for it.

use super::Engine;
use crate::store::{self, gate, CheckpointFile, Meta, Name, Storage, Verify};
use crate::Error;

/// Whether `id` looks like a run id this crate makes (1 to 64 lowercase hex digits).
pub(crate) fn valid_run_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
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

impl Engine {
    /// This run's id, written into every file it saves and kept across resumes (made at
    /// the first `on_train_begin` or save).
    pub(crate) fn run_id(&self) -> &str {
        self.saved.run_id.as_deref().unwrap_or("")
    }

    pub(crate) fn ensure_run_id(&mut self) {
        if self.saved.run_id.is_none() {
            self.saved.run_id = Some(new_run_id());
            self.run_confirmed = true;
        }
    }

    /// The marker that proves this run wrote the file whose head has `digest`.
    pub(crate) fn marker(&self, id: &str, digest: &[u8; 32]) -> Name {
        self.folder().join(&marker_file(id, digest))
    }

    /// Leaves the marker of a file this run just committed at `path`, and removes the
    /// marker of the file it replaced there, if this callback wrote that one.
    pub(crate) fn mark_written(&mut self, path: &Name, digest: [u8; 32]) -> Result<(), Error> {
        let marker = self.marker(self.run_id(), &digest);
        self.config.storage.put_if_absent(&marker, b"")?;
        if let Some(old) = self.session_digests.insert(path.clone(), digest) {
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
        delete_marker(&*self.config.storage, &marker, self.run_id());
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
        let file_name = marker_file(&writer, &digest);
        // The callback's folder, then the file's folder and each one above it, up to its
        // root.
        let path = file.path();
        let parts: Vec<&str> = path.components().collect();
        let mut folders = vec![self.marker(&writer, &digest)];
        for depth in (0..parts.len()).rev() {
            folders.push(
                path.root_name()
                    .join(&parts[..depth].join("/"))
                    .join(&file_name),
            );
        }
        folders
            .iter()
            .any(|marker| self.config.storage.exists_as_own(marker).unwrap_or(false))
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
            if self.config.explicit_run_id && self.saved.run_id.as_ref() != Some(id) {
                return Err(format!(
                    "the checkpoint belongs to run {id}, not to run {}",
                    self.run_id()
                ));
            }
        }
        let (kept, foreign): (Vec<_>, Vec<_>) = std::mem::take(&mut saved.kept)
            .into_iter()
            .partition(|f| self.could_have_written(&f.path).is_ok());
        // Named a few at a time: the list is untrusted, and may be long.
        for f in foreign.iter().take(3) {
            log::warn!(
                target: "model_checkpoint",
                "ignoring {} from the checkpoint's list of kept files: this callback could not have written it",
                crate::text::shorten(f.path.as_str(), 200)
            );
        }
        if foreign.len() > 3 {
            log::warn!(
                target: "model_checkpoint",
                "ignoring {} more files from the checkpoint's list of kept files: this callback could not have written them",
                foreign.len() - 3
            );
        }
        saved.kept = kept;
        if saved
            .last_saved
            .as_ref()
            .is_some_and(|p| self.could_have_written(p).is_err())
        {
            saved.last_saved = None;
        }
        // Until `confirm_run` checks it against the folder, the restored run id is a claim:
        // retention deletes only files this engine saved itself.
        self.run_confirmed = self.config.explicit_run_id;
        if self.config.explicit_run_id {
            saved.run_id = self.saved.run_id.clone();
        }
        self.saved = saved;
        self.resumed = true;
        Ok(())
    }

    /// What the engine knows, without reading anything, of whether this run wrote `path`:
    /// refused outright when the template could not have produced it or it lies outside
    /// the folder; otherwise the facts [`Ownership::check`] weighs against the file.
    pub(crate) fn ownership(&self, path: &Name) -> Result<Ownership, String> {
        self.could_have_written(path)?;
        let folder = self.folder();
        if !self.config.storage.contains(&folder, path) {
            return Err(format!(
                "it lies outside the checkpoint folder {}",
                folder.display()
            ));
        }
        Ok(self.writer_of(path, path))
    }

    /// The facts on whether this run wrote `path`, to be checked against the file `name`
    /// (the checkpoint `path`, or its head).
    pub(super) fn writer_of(&self, path: &Name, name: &Name) -> Ownership {
        Ownership {
            name: name.clone(),
            run_id: self.run_id().to_owned(),
            saved_here: self.session_saved.contains(path),
            expected: self.session_digests.get(path).copied(),
            run_confirmed: self.run_confirmed,
            folder: self.folder(),
        }
    }
}

/// The facts on whether this run wrote a file, gathered by the engine
/// ([`Engine::ownership`]) and checked against the file by [`Ownership::check`], on
/// whichever thread deletes it.
#[derive(Clone, Debug)]
pub(crate) struct Ownership {
    /// The file to read: the checkpoint, or its head.
    name: Name,
    run_id: String,
    /// Whether this callback saved the checkpoint itself.
    saved_here: bool,
    /// The header digest of the file (or head) this callback committed there, when it did:
    /// a file found there with another (a later save to the same name, which the delete
    /// may run after) is not the one retention decided on.
    expected: Option<[u8; 32]>,
    /// Whether the run is confirmed (see [`Engine::confirm_run`]).
    run_confirmed: bool,
    /// Where the run's markers are.
    folder: Name,
}

impl Ownership {
    /// For the deduplicated checkpoint whose folder this is: [`Ownership::check`] of its
    /// head, which its index names in the run's blob folder.
    pub(crate) fn check_dedup(&self, storage: &dyn Storage) -> Result<[u8; 32], String> {
        let index =
            crate::sharded::read_index(storage, &self.name.join(crate::sharded::INDEX_FILE))
                .map_err(|e| e.to_string())?;
        let head = index
            .model_checkpoint
            .shards
            .first()
            .map(|entry| self.name.join(&entry.file))
            .filter(|head| head.parent() == crate::sharded::blobs::blobs_dir(&self.folder))
            .ok_or("its head is not in this run's blob folder")?;
        Ownership {
            name: head,
            ..self.clone()
        }
        .check(storage)
    }

    /// Whether the file carries this run's id, and this callback saved it, or a confirmed
    /// run left its marker for that exact file. Returns the file's header digest (its
    /// marker's).
    pub(crate) fn check(&self, storage: &dyn Storage) -> Result<[u8; 32], String> {
        // Opening refuses anything but a regular file (or an object).
        let file = CheckpointFile::open_in(storage, &self.name, Verify::HeaderOnly)
            .map_err(|e| e.to_string())?;
        let id = Meta::from_info(file.info())?.run_id;
        if id.as_deref() != Some(self.run_id.as_str()) || self.run_id.is_empty() {
            return Err("it does not carry this run's id".to_owned());
        }
        let digest = file.header_digest();
        if self.expected.is_some_and(|e| e != digest) {
            return Err(
                "it is no longer the file this run saved there (saved again since)".to_owned(),
            );
        }
        if self.saved_here {
            return Ok(digest);
        }
        // Saved before this callback was made: only a confirmed run, and only with the
        // marker it left for that exact file.
        if !self.run_confirmed {
            return Err("the run this callback resumed is not confirmed".to_owned());
        }
        let marker = self.folder.join(&marker_file(&self.run_id, &digest));
        if !storage.exists_as_own(&marker).unwrap_or(false) {
            return Err("this run left no marker for it".to_owned());
        }
        Ok(digest)
    }
}

/// Removes run `run_id`'s marker `marker` (through the deletion gate); a failure is logged:
/// a stale marker only ever lets retention delete a file this run wrote.
pub(super) fn delete_marker(storage: &dyn Storage, marker: &Name, run_id: &str) {
    let claim = gate::Claim::Marker { run_id };
    if let Err(e) = gate::delete(storage, marker, claim) {
        log::warn!(target: "model_checkpoint", "cannot remove {marker}: {e}");
    }
}

/// The file name of run `id`'s marker for the file whose head has `digest`.
pub(super) fn marker_file(id: &str, digest: &[u8; 32]) -> String {
    format!(
        "{}{id}.{}",
        store::MARKER_PREFIX,
        crate::text::hex(&digest[..16])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_lowercase_hex() {
        assert!(valid_run_id("0123abcd") && !valid_run_id("../x") && !valid_run_id(""));
        assert!(valid_run_id(&new_run_id()));
    }
}
