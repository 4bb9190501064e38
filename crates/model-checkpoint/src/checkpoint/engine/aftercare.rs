//! What follows a committed save on storage: its journal row, the marker that proves this
//! run wrote it, the `last` copy, and the deletions retention decided.
//!
//! The engine decides all of it from its state, on the training thread, the moment it
//! learns of the commit ([`Engine::aftercare`]); an [`Aftercare`] then carries it out:
//! there for a foreground save, and on the writer thread for a background one (handed over
//! after the hook's own save: see `Engine::send_aftercare`), so that a background save
//! costs the training thread no storage round trip (a journal row is a whole file
//! rewritten and synced twice). Its outcome, [`Done`],
//! comes back as a background save's does: the files retention could not delete go back
//! on the list, to be tried at the next save, and a failure surfaces at the next hook.

use super::journal::{Journal, Row};
use super::ownership::{delete_marker, marker_file, Ownership};
use super::{Engine, Pending};
use crate::policy::SavedFile;
use crate::store::{gate, Name, Storage};
use crate::Error;

/// The storage work that follows one committed save, in the order it is done.
pub(crate) struct Aftercare {
    /// The journal, its file, and the save's row there.
    journal: Option<(Journal, Name, Row)>,
    /// The folder of the run's markers.
    folder: Name,
    /// The marker proving this run wrote the committed file.
    marker: Name,
    /// The marker of the file the save replaced at its path, when this run wrote that one.
    stale_marker: Option<Name>,
    /// The committed file and the `last` link that gets a copy of it.
    last: Option<(Name, Name)>,
    durable: bool,
    run_id: String,
    deletions: Vec<Deletion>,
}

/// A file retention no longer keeps.
struct Deletion {
    file: SavedFile,
    /// What proves this run wrote it, or why nothing can.
    ownership: Result<Ownership, String>,
    /// The journal's row for it once deleted (when there is a journal).
    journal_row: Option<Row>,
}

/// What came of an [`Aftercare`].
#[derive(Debug, Default)]
pub(crate) struct Done {
    /// Files retention deleted (with their markers), and the header digest of each (of
    /// its head for a deduplicated checkpoint; none for a sharded one).
    pub deleted: Vec<(Name, Option<[u8; 32]>)>,
    /// Files retention meant to delete and could not this time: tracked again.
    pub retry: Vec<SavedFile>,
    /// The first failure (the marker or the `last` copy); what came after it was not done.
    pub error: Option<Error>,
}

impl Aftercare {
    /// Does the work through `storage`. Never fails as a whole: see [`Done`].
    /// Borrows itself so that a background save's aftercare goes back to the training
    /// thread to be dropped (see `background`).
    pub(crate) fn run(&self, storage: &dyn Storage) -> Done {
        let mut done = Done::default();
        if let Some((journal, name, row)) = &self.journal {
            journal.record(storage, name, row);
        }
        if let Err(e) = self.mark_and_copy(storage) {
            // Retention waits for the next save; its files stay tracked.
            done.retry = self.deletions.iter().map(|d| d.file.clone()).collect();
            done.error = Some(e);
            return done;
        }
        for deletion in &self.deletions {
            let path = deletion.file.path.clone();
            let checked = match &deletion.ownership {
                Ok(ownership) => ownership.check(storage),
                Err(why) => Err(why.clone()),
            };
            let digest = match checked {
                Ok(digest) => digest,
                Err(why) => {
                    // Never deleted: only files this run provably wrote may go.
                    log::warn!(target: "model_checkpoint", "retention leaves {} alone: {why}", path.display());
                    continue;
                }
            };
            let claim = gate::Claim::RunCheckpoint {
                run_id: &self.run_id,
                digest: Some(digest),
            };
            match gate::delete(storage, &path, claim) {
                Ok(()) => {
                    if let (Some((journal, name, _)), Some(row)) =
                        (&self.journal, &deletion.journal_row)
                    {
                        journal.record(storage, name, row);
                    }
                    let marker = marker_file(&self.run_id, &digest);
                    delete_marker(storage, &self.folder.join(&marker), &self.run_id);
                    done.deleted.push((path, Some(digest)));
                }
                Err(e @ Error::NotOurs { .. }) => {
                    log::warn!(target: "model_checkpoint", "retention leaves {} alone: {e}", path.display());
                }
                Err(e) => {
                    // Left for the next round: an extra file is harmless.
                    log::warn!(target: "model_checkpoint", "cannot remove {}: {e}", path.display());
                    done.retry.push(deletion.file.clone());
                }
            }
        }
        done
    }

    /// Leaves the save's marker (and removes the one it made stale), then copies the save
    /// to `last`.
    fn mark_and_copy(&self, storage: &dyn Storage) -> Result<(), Error> {
        storage.put_if_absent(&self.marker, b"")?;
        if let Some(stale) = &self.stale_marker {
            delete_marker(storage, stale, &self.run_id);
        }
        if let Some((file, last)) = &self.last {
            gate::check_replace(storage, last, gate::Claim::ToolCheckpoint)?;
            storage.copy(file, last, self.durable)?;
        }
        Ok(())
    }
}

impl Engine {
    /// A save is durable at its final path: track it (the run's count, `last_saved`, the
    /// files retention keeps) and decide what follows on storage: its journal row and
    /// marker, the `last` copy, and which files retention deletes. Only after the commit
    /// may older files go, so a crash leaves extra files, never fewer.
    pub(super) fn aftercare(&mut self, pending: Pending, digest: [u8; 32]) -> Aftercare {
        let journal = self.journal_entry("saved", &pending.file, Some(&pending));
        let Pending {
            file,
            direction,
            counted,
            ..
        } = pending;
        // The proof, kept in the folder and never in a checkpoint, that this run wrote this
        // exact file: what retention and a later resume of this run check.
        let marker = self.marker(self.run_id(), &digest);
        let stale_marker = self
            .session_digests
            .insert(file.path.clone(), digest)
            .filter(|old| *old != digest)
            .map(|old| self.marker(self.run_id(), &old));
        self.session_saved.insert(file.path.clone());
        let mut care = Aftercare {
            journal,
            folder: self.folder(),
            marker,
            stale_marker,
            last: None,
            durable: self.config.options.durable,
            run_id: self.run_id().to_owned(),
            deletions: Vec::new(),
        };
        if !counted {
            // A save on a signal: the run's own (marked), outside its state and retention.
            self.interrupt_saved = Some(file.path);
            return care;
        }
        self.saved.last_saved = Some(file.path.clone());
        self.saved.saves = self.saved.saves.saturating_add(1);
        care.last = self.last_path().map(|last| (file.path.clone(), last));
        let mut dropped = Vec::new();
        self.retain(file, direction, |_, f| {
            dropped.push(f.clone());
            super::Fate::Forget
        });
        care.deletions = dropped
            .into_iter()
            .map(|file| Deletion {
                ownership: self.ownership(&file.path),
                journal_row: self
                    .journal
                    .is_some()
                    .then(|| self.row("deleted", &file, None)),
                file,
            })
            .collect();
        care
    }

    /// The journal (when there is one), its file, and its row for `event` of `file`: what an
    /// aftercare records.
    pub(super) fn journal_entry(
        &self,
        event: &'static str,
        file: &SavedFile,
        pending: Option<&Pending>,
    ) -> Option<(Journal, Name, Row)> {
        let journal = self.journal.clone()?;
        let name = self.folder().join(crate::store::JOURNAL_FILE);
        Some((journal, name, self.row(event, file, pending)))
    }

    /// Takes in what an [`Aftercare`] did: deleted files are no longer this session's,
    /// files it could not delete are tracked again.
    pub(super) fn after(&mut self, done: Done) -> Result<(), Error> {
        for (path, digest) in &done.deleted {
            // Unless the name was saved again since (a later save's tracking stays).
            let current = self.session_digests.get(path);
            if digest.is_none() || current.is_none() || current == digest.as_ref() {
                self.session_saved.remove(path);
                self.session_digests.remove(path);
            }
        }
        if !done.retry.is_empty() {
            // The tracked files may be many (a restored state says which): looked up once.
            let mut tracked: std::collections::HashSet<Name> =
                self.saved.kept.iter().map(|f| f.path.clone()).collect();
            for file in done.retry {
                if tracked.insert(file.path.clone()) {
                    self.saved.kept.push(file);
                }
            }
        }
        done.error.map_or(Ok(()), Err)
    }
}
