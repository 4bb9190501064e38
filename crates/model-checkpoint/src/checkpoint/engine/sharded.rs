//! Saves of a multi-process run: every rank writes its shard of the checkpoint's folder,
//! rank 0 commits it with the index (`crate::sharded`), the others wait for the index.
//! Retention acts on whole folders, on rank 0 only: the index goes first, so a folder is
//! never a checkpoint with a shard missing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::super::background::WriteFn;
use super::aftercare::Done;
use super::ownership::{delete_marker, marker_file, Ownership};
use super::Written;
use super::{Engine, Fate, Last, Pending, Shard};
use crate::callback::Context;
use crate::model::{NamedTensor, Placement};
use crate::policy::SavedFile;
use crate::sharded::{self, ShardTensor, INDEX_FILE};
use crate::store::{gate, Kind, Name, Storage, TRAINING_PREFIX};
use crate::Error;

impl Engine {
    /// Writes this rank's shard of `tensors` (those it owns of the replicated ones, its
    /// slices, its own state) and, on rank 0, commits the folder; then tracks the save. With
    /// background saves the shard is copied (or shared behind the fence) and the write and
    /// the commit run on the writer thread.
    pub(super) fn save_sharded(
        &mut self,
        shard: Shard<'_>,
        tensors: Vec<NamedTensor<'_>>,
        info: &BTreeMap<String, String>,
        pending: Pending,
        ctx: &Context<'_>,
    ) -> Result<(), Error> {
        let Shard {
            ranks,
            path,
            kind,
            layout,
            step,
            interrupt,
        } = shard;
        let placement = |name: &str| {
            layout
                .get(name.strip_prefix(TRAINING_PREFIX).unwrap_or(name))
                .cloned()
                .unwrap_or(Placement::Replicated)
        };
        // Every rank computes the same owners from the same names and sizes.
        let replicated: Vec<(String, usize)> = tensors
            .iter()
            .filter(|t| placement(&t.name) == Placement::Replicated)
            .map(|t| (t.name.clone(), t.data.byte_len()))
            .collect();
        let sizes: Vec<(&str, usize)> = replicated.iter().map(|(n, b)| (n.as_str(), *b)).collect();
        let owner = sharded::owners(&sizes, ranks.world_size);
        let replicated = sharded::replicated_digest(&sizes);
        let mine: BTreeSet<&str> = sizes
            .iter()
            .zip(&owner)
            .filter(|(_, &o)| o == ranks.rank)
            .map(|((n, _), _)| *n)
            .collect();
        let (mine, placements): (Vec<NamedTensor<'_>>, Vec<Placement>) = tensors
            .into_iter()
            .filter_map(|t| match placement(&t.name) {
                Placement::Replicated if !mine.contains(t.name.as_str()) => None,
                placement => Some((t, placement)),
            })
            .unzip();
        // Every rank names this save alike: the run (the same id on every rank), the
        // checkpoint it resumed from (so that a save after a resume never takes a shard the
        // crashed attempt left under the same number), the save's number and the step.
        let save_id = format!(
            "{}/{}{}/{step}",
            self.run_id(),
            self.resumed_from
                .as_deref()
                .map(|r| format!("after-{r}/"))
                .unwrap_or_default(),
            pending.file.seq
        );
        let commit = ShardCommit {
            dir: path.clone(),
            ranks,
            save_id,
            kind,
            info: info.clone(),
            replicated,
            placements,
            barrier: self.config.barrier.clone(),
            options: self.config.commit_options,
        };
        if self.config.background && !interrupt {
            let mut commit = Some(commit);
            let write: WriteFn<Written> = Box::new(move |storage, named| {
                // A `WriteFn` is called once.
                let commit = commit.take().ok_or_else(|| Error::Writer {
                    reason: "a sharded save was handed to its writer twice".into(),
                    source: None,
                })?;
                commit.write(storage, named)?;
                Ok(Written::Folder(ranks))
            });
            return self.hand_to_writer(ctx, &mine, write, pending);
        }
        // Every earlier save first, so that this one is the newest when it returns; their
        // failure is reported, after this save is made (every rank takes its part in it).
        let earlier = if interrupt { self.flush() } else { Ok(()) };
        let saved = commit
            .write(&*self.config.storage, Ok(mine))
            .and_then(|()| self.committed_sharded(pending, ranks));
        crate::error::first_failure(earlier, saved)
    }

    /// A sharded save committed in the foreground: track it, and do what follows on
    /// storage (see [`Engine::folder_aftercare`]) now.
    pub(super) fn committed_sharded(
        &mut self,
        pending: Pending,
        ranks: sharded::Ranks,
    ) -> Result<(), Error> {
        let mut care = self.folder_aftercare(pending, ranks);
        let done = care.run(&*self.config.storage);
        self.after(done)
    }

    /// A sharded save is committed: track it, and decide what follows on storage, on rank
    /// 0 only: its journal row (rank 0 alone keeps the journal: it is rewritten whole at
    /// each row, and rank 0 is the one that deletes), the `last/` copy, and retention of
    /// whole folders. Only folders this engine saved are deleted (a resumed run keeps the
    /// ones from before the resume: extra folders, never lost ones).
    pub(super) fn folder_aftercare(
        &mut self,
        pending: Pending,
        ranks: sharded::Ranks,
    ) -> FolderAftercare {
        let lead = ranks.rank == 0;
        let journal = self
            .journal_entry("saved", &pending.file, Some(&pending))
            .filter(|_| lead);
        let Pending {
            file, direction, ..
        } = pending;
        self.saved.last_saved = Some(file.path.clone());
        self.saved.saves = self.saved.saves.saturating_add(1);
        self.session_saved.insert(file.path.clone());
        let last = self
            .sharded_last()
            .filter(|_| lead)
            .map(|last| (file.path.clone(), last));
        let mut dropped = Vec::new();
        self.retain(file, direction, |engine, f| {
            // The other ranks stop tracking it as rank 0 deletes it.
            if !lead {
                return Fate::Forget;
            }
            if !engine.config.dedup
                && (!engine.session_saved.contains(&f.path)
                    || engine.could_have_written(&f.path).is_err())
            {
                log::warn!(target: "model_checkpoint", "retention leaves {} alone: this run did not save it in this process", f.path.display());
                return Fate::Forget;
            }
            dropped.push(f.clone());
            Fate::Forget
        });
        let deletions = dropped
            .into_iter()
            .map(|file| FolderDeletion {
                // A deduplicated checkpoint's head is in the blob folder: proved this
                // run's through it.
                head: self.config.dedup.then(|| {
                    self.could_have_written(&file.path)
                        .map(|()| self.writer_of(&file.path, &file.path))
                }),
                row: self
                    .journal
                    .is_some()
                    .then(|| self.row("deleted", &file, None)),
                file,
            })
            .collect();
        FolderAftercare {
            journal,
            last,
            dedup: self.config.dedup,
            durable: self.config.options.durable,
            run_id: self.run_id().to_owned(),
            folder: self.folder(),
            world_size: self.config.ranks.map(|r| r.world_size),
            deletions,
        }
    }

    /// Where `save_last` keeps a copy of the newest sharded checkpoint: `last` in the
    /// template's folder, or the path given to `save_last_as`.
    pub(crate) fn sharded_last(&self) -> Option<Name> {
        match &self.config.last {
            Last::Off => None,
            Last::Beside => Some(self.folder().join(crate::store::LAST_DIR)),
            Last::At(p) => Some(p.clone()),
        }
    }
}

/// What follows a committed sharded save on storage (see [`Engine::folder_aftercare`]):
/// done there for a foreground save, on the writer thread for a background one.
pub(crate) struct FolderAftercare {
    /// The journal, its file, and the save's row there.
    journal: Option<(super::journal::Journal, Name, super::journal::Row)>,
    /// The committed folder, and the `last/` folder that gets a copy of it.
    last: Option<(Name, Name)>,
    dedup: bool,
    durable: bool,
    run_id: String,
    /// The callback's folder (its blob folder is in it).
    folder: Name,
    /// The run's world size, for an index that cannot be read.
    world_size: Option<usize>,
    deletions: Vec<FolderDeletion>,
}

/// A folder retention no longer keeps.
struct FolderDeletion {
    file: SavedFile,
    /// For a deduplicated checkpoint: what proves this run wrote its head, or why nothing
    /// can.
    head: Option<Result<Ownership, String>>,
    /// The journal's row for it once deleted (when there is a journal).
    row: Option<super::journal::Row>,
}

impl FolderAftercare {
    /// Does the work through `storage`, once (the deletions are taken). Never fails as a
    /// whole: see [`Done`]. Borrows itself so that a background save's aftercare goes back
    /// to the training thread to be dropped (see `background`).
    pub(crate) fn run(&mut self, storage: &dyn Storage) -> Done {
        let mut done = Done::default();
        let deletions = std::mem::take(&mut self.deletions);
        if let Some((journal, name, row)) = &self.journal {
            journal.record(storage, name, row);
        }
        if let Some((from, last)) = &self.last {
            if let Err(e) = self.copy_to_last(storage, from, last) {
                done.retry = deletions.into_iter().map(|d| d.file).collect();
                done.error = Some(e);
                return done;
            }
        }
        for deletion in deletions {
            let path = deletion.file.path.clone();
            let head = match deletion
                .head
                .map(|h| h.and_then(|o| o.check_dedup(storage)))
            {
                Some(Err(why)) => {
                    log::warn!(target: "model_checkpoint", "retention leaves {} alone: {why}", path.display());
                    continue;
                }
                Some(Ok(digest)) => Some(digest),
                None => None,
            };
            match self.delete_sharded(storage, &path) {
                Ok(()) => {
                    // The head's blob goes at the collection that follows; its marker now.
                    if let Some(digest) = head {
                        let marker = self.folder.join(&marker_file(&self.run_id, &digest));
                        delete_marker(storage, &marker, &self.run_id);
                    }
                    if let (Some((journal, name, _)), Some(row)) = (&self.journal, &deletion.row) {
                        journal.record(storage, name, row);
                    }
                    done.deleted.push((path, head));
                }
                Err(e) => {
                    log::warn!(target: "model_checkpoint", "cannot remove {}: {e}", path.display());
                    done.retry.push(deletion.file);
                }
            }
        }
        done
    }

    /// `save_last` for sharded checkpoints: the folder `last` stops being a checkpoint (its
    /// index goes first), takes copies of the new checkpoint's shards (server-side copies on
    /// S3, links or copies locally), drops shards of another world size, and gets the index
    /// last. A crash in between leaves `last` without an index: not a checkpoint, while the
    /// checkpoint it copies stays whole.
    fn copy_to_last(&self, storage: &dyn Storage, from: &Name, last: &Name) -> Result<(), Error> {
        if self.dedup {
            return super::dedup::copy_dedup_to_last(storage, &self.folder, from, last);
        }
        // `last/` holds a copy of some run's checkpoint; anything else there stays.
        let any_run = gate::Claim::ShardedPart { run_id: None };
        let last_index = last.join(INDEX_FILE);
        delete_index(storage, &last_index, None)?;
        storage.prepare_dir(last)?;
        // The checkpoint's parts are its index's shards: whatever else its folder holds (a
        // user's notes) is not copied.
        let world = sharded::read_index(storage, &from.join(INDEX_FILE))?
            .model_checkpoint
            .world_size;
        let parts: Vec<String> = (0..world)
            .map(|rank| sharded::shard_file(rank, world))
            .collect();
        let new: BTreeSet<String> = parts
            .iter()
            .cloned()
            .chain(std::iter::once(INDEX_FILE.to_owned()))
            .collect();
        for stale in storage.list(last, 0)? {
            let stale_name = stale.name.file_name().unwrap_or_default().to_owned();
            // Only the parts of an earlier copy (its shards, of another world size) go;
            // anything else a user put in `last/` stays, checkpoints included.
            if !new.contains(&stale_name) && sharded::is_shard_file(&stale_name) {
                match gate::delete(storage, &stale.name, any_run) {
                    Ok(()) => {}
                    Err(e @ Error::NotOurs { .. }) => {
                        log::warn!(target: "model_checkpoint", "save_last leaves {} alone: {e}", stale.name);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let durable = self.durable;
        for part in &parts {
            let to = last.join(part);
            gate::check_replace(storage, &to, any_run)?;
            storage.copy(&from.join(part), &to, durable)?;
        }
        storage.copy(&from.join(INDEX_FILE), &last_index, durable)
    }

    /// Deletes a sharded checkpoint of this run through the deletion gate: the index first
    /// (from then on it is not a checkpoint, whatever happens to the rest), then the shards
    /// its world size names, then the folder if nothing else is left in it. Files this run
    /// did not write there (a user's notes, another tool's files) stay, and so does the
    /// folder then.
    fn delete_sharded(&self, storage: &dyn Storage, dir: &Name) -> Result<(), Error> {
        let claim = gate::Claim::ShardedPart {
            run_id: Some(&self.run_id),
        };
        let index_name = dir.join(INDEX_FILE);
        // The world size comes from the index (proved this run's by the gate just after);
        // shard names are made here, never taken from a file.
        // A deduplicated checkpoint's head and blobs are not in its folder: collected after.
        let world = sharded::read_index(storage, &index_name).ok().map(|index| {
            match index.model_checkpoint.blobs {
                Some(_) => 0,
                None => index.model_checkpoint.world_size,
            }
        });
        delete_index(storage, &index_name, Some(&self.run_id))?;
        let world = world.or(self.world_size).unwrap_or(0);
        let world = if self.dedup { 0 } else { world };
        for rank in 0..world {
            let shard = dir.join(&sharded::shard_file(rank, world));
            if let Err(e) = gate::delete(storage, &shard, claim) {
                match e {
                    Error::NotOurs { .. } => {
                        log::warn!(target: "model_checkpoint", "retention leaves {shard} alone: {e}");
                    }
                    e => return Err(e),
                }
            }
        }
        gate::remove_empty_folder(storage, dir)
    }
}

/// One rank's part in a sharded save, decided on the training thread and done on
/// whichever thread writes: its shard, then the commit (rank 0 writes the index once every
/// shard is there; the others wait for it), so that the save counts on every rank only once
/// its index exists.
struct ShardCommit {
    dir: Name,
    ranks: sharded::Ranks,
    save_id: String,
    kind: Kind,
    info: BTreeMap<String, String>,
    replicated: String,
    /// The placement of each tensor handed to [`ShardCommit::write`], in order.
    placements: Vec<Placement>,
    barrier: Option<Arc<dyn sharded::Barrier>>,
    options: sharded::CommitOptions,
}

impl ShardCommit {
    /// `tensors` is the shard's tensors, or why the writer could not copy them: then this
    /// rank writes nothing but still passes the barriers, and fails.
    fn write(
        self,
        storage: &dyn Storage,
        tensors: Result<Vec<NamedTensor<'_>>, Error>,
    ) -> Result<(), Error> {
        let ShardCommit {
            dir,
            ranks,
            save_id,
            kind,
            info,
            replicated,
            placements,
            barrier,
            options,
        } = self;
        // A committed checkpoint is never rewritten: its shards would stop matching its
        // index. Every rank sees the same index, so every rank refuses alike.
        let index = dir.join(INDEX_FILE);
        if storage.exists(&index)? {
            return Err(Error::AlreadyExists {
                name: format!(
                    "{dir} (a committed sharded checkpoint: each save needs a new folder; put the step or {{batch}} in the template)"
                ),
            });
        }
        let saved = tensors.and_then(|tensors| {
            let shard_tensors: Vec<ShardTensor<'_>> = tensors
                .into_iter()
                .zip(placements)
                .map(|(tensor, placement)| ShardTensor { tensor, placement })
                .collect();
            sharded::save_shard_checked(
                storage,
                &dir,
                ranks,
                &save_id,
                kind,
                shard_tensors,
                &info,
                replicated,
            )
        });
        let timeout = options.timeout;
        let Some(barrier) = barrier else {
            saved?;
            if ranks.rank == 0 {
                sharded::commit(storage, &dir, ranks.world_size, &save_id, &info, options)?;
            } else if !sharded::wait_for_index(storage, &dir, timeout)? {
                return Err(Error::Io {
                    action: "wait for the index of",
                    path: dir,
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("rank 0 did not commit within {timeout:?}"),
                    ),
                });
            }
            return Ok(());
        };
        // Every rank passes both barriers, even after a failure, so that the ranks'
        // barriers stay paired: once all pass the first, every shard that will be there
        // is; rank 0 commits at once (one look); all pass the second once it is done.
        barrier.wait(&format!("shards {save_id}"), timeout)?;
        let committed = if ranks.rank == 0 && saved.is_ok() {
            let once = sharded::CommitOptions {
                timeout: std::time::Duration::ZERO,
                ..options
            };
            sharded::gather(storage, &dir, ranks.world_size, &save_id, &info, once)
                .and_then(|pending| pending.publish(storage))
                .map(|_| ())
        } else {
            Ok(())
        };
        barrier.wait(&format!("index {save_id}"), timeout)?;
        saved?;
        committed?;
        if !storage.exists(&index)? {
            return Err(Error::Io {
                action: "find the index of",
                path: dir,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "rank 0 did not commit (a rank's shard is missing)",
                ),
            });
        }
        Ok(())
    }
}

/// Deletes the sharded checkpoint index `name` through the gate, if it is one (of run
/// `run_id`, or of any run with `None`).
fn delete_index(
    storage: &dyn crate::store::Storage,
    name: &Name,
    run_id: Option<&str>,
) -> Result<(), Error> {
    let check = index_of_run(name.as_str(), run_id);
    let what = if run_id.is_some() {
        "an index of this run's"
    } else {
        "a sharded checkpoint's index"
    };
    gate::delete(
        storage,
        name,
        gate::Claim::Document {
            what,
            limit: crate::sharded::MAX_INDEX_BYTES,
            check: &check,
        },
    )
}

/// A check for the gate that bytes are a sharded checkpoint's index (named `name`) of run
/// `run_id` (of any run, with `None`): its save id starts with the run's.
fn index_of_run<'a>(
    name: &'a str,
    run_id: Option<&'a str>,
) -> impl Fn(&[u8]) -> Result<(), String> + 'a {
    move |bytes| {
        let index = sharded::Index::parse(name, bytes).map_err(|e| e.to_string())?;
        match run_id {
            Some(id)
                if id.is_empty()
                    || !index
                        .model_checkpoint
                        .save_id
                        .starts_with(&format!("{id}/")) =>
            {
                Err(format!("its save is not one of run {id}"))
            }
            _ => Ok(()),
        }
    }
}
