//! Deduplicated saves (`crate::sharded::blobs`): the blobs the run lacks, the head, then the
//! index (the commit); then what follows any folder checkpoint (tracking, `last`,
//! retention of whole checkpoints, in `sharded.rs`), and the collection of the blobs no
//! index names any more.

use std::collections::BTreeMap;

use super::{Engine, Pending};
use crate::model::NamedTensor;
use crate::sharded::{self, blobs, Index, INDEX_FILE};
use crate::store::{gate, Kind, Name};
use crate::Error;

impl Engine {
    /// Writes a deduplicated checkpoint of `tensors` as the folder `path`, replacing the
    /// index of one saved there before (Keras overwrites), then tracks it and collects.
    pub(super) fn save_dedup(
        &mut self,
        path: &Name,
        kind: Kind,
        tensors: Vec<NamedTensor<'_>>,
        info: &BTreeMap<String, String>,
        pending: Pending,
    ) -> Result<(), Error> {
        // The previous save's collection is done before this save looks for blobs (it
        // could otherwise delete one this save finds there and names).
        self.settle_collection();
        let storage = self.config.storage.clone();
        let index = path.join(INDEX_FILE);
        let replacing = storage.exists(&index)?;
        if replacing {
            check_replace_index(&*storage, &index)?;
        }
        storage.prepare_dir(path)?;
        let run_id = self.run_id().to_owned();
        let save_id = format!("{run_id}/{}/{}", pending.file.seq, pending.global_step);
        let blobs_dir = blobs::blobs_dir(&self.folder());
        if self.blobs_lock.is_none() {
            storage.prepare_dir(&blobs_dir)?;
            self.blobs_lock = storage.lock(&blobs_dir)?;
        }
        let saved = blobs::save_dedup(
            &*storage,
            path,
            &blobs_dir,
            &save_id,
            kind,
            tensors,
            info,
            &run_id,
            self.config.compress,
            &mut self.known_blobs,
        )?;
        let (_, digest) = saved.head.clone();
        if replacing {
            saved.index.publish_replacing(&*storage)?;
        } else {
            saved.index.publish(&*storage)?;
        }
        // The proof, in the folder, that this run wrote the head: what a resumed run is
        // confirmed by (the head carries the run id and the training state). Kept by the
        // checkpoint's name, so that the marker of a head whose index this replaced goes.
        self.mark_written(path, digest)?;
        self.committed_sharded(pending, sharded::Ranks::single())?;
        // After a crash, blobs of the run's unfinished saves are collected at its first
        // save; after retention or a replaced index, those no index names now.
        if replacing || self.config.retention.is_on() || !self.blobs_collected {
            self.collect_blobs();
        }
        Ok(())
    }

    /// Deletes the blobs this run wrote that no index in its folder names, on a helper
    /// thread: training goes on meanwhile, and the next deduplicated save, `flush` and the
    /// end of training wait for it ([`Engine::settle_collection`]) before anything else
    /// touches the blobs. Failures are logged and left for the next collection.
    fn collect_blobs(&mut self) {
        self.settle_collection();
        self.blobs_collected = true;
        let folder = self.folder();
        let run_id = self.run_id().to_owned();
        let storage = self.config.storage.clone();
        let spawned = std::thread::Builder::new()
            .name("model-checkpoint-collect".to_owned())
            .spawn(move || {
                blobs::collect(&*storage, &folder, &run_id)
                    .map_err(|e| format!("blobs in {folder} not collected: {e}"))
            });
        match spawned {
            Ok(handle) => self.collecting = Some(handle),
            Err(e) => log::warn!(target: "model_checkpoint", "blobs not collected: no thread: {e}"),
        }
    }

    /// Waits for the collection of blobs in progress, if any, and forgets what it deleted.
    pub(super) fn settle_collection(&mut self) {
        let Some(handle) = self.collecting.take() else {
            return;
        };
        match handle.join() {
            Ok(Ok(collected)) => self.known_blobs.forget_collected(&collected),
            Ok(Err(e)) => log::warn!(target: "model_checkpoint", "{e}"),
            Err(_) => {
                log::error!(target: "model_checkpoint", "the collection of blobs panicked");
                self.known_blobs.forget_all();
            }
        }
    }
}

/// Refuses to replace `index` unless it is a deduplicated checkpoint's index (of any run):
/// never a sharded one's (its shards would stay behind), nor anything else.
fn check_replace_index(storage: &dyn crate::store::Storage, index: &Name) -> Result<(), Error> {
    let check = |bytes: &[u8]| {
        let parsed = Index::parse(index.as_str(), bytes).map_err(|e| e.to_string())?;
        match parsed.model_checkpoint.blobs {
            Some(_) => Ok(()),
            None => Err("it is a sharded checkpoint's index".to_owned()),
        }
    };
    gate::check_replace(
        storage,
        index,
        gate::Claim::Document {
            what: "a deduplicated checkpoint's index",
            limit: crate::sharded::MAX_INDEX_BYTES,
            check: &check,
        },
    )
}

/// `save_last` for deduplicated checkpoints: `last/` gets an index naming the same
/// blobs (replacing the index of an earlier copy; a sharded checkpoint's is refused).
pub(super) fn copy_dedup_to_last(
    storage: &dyn crate::store::Storage,
    folder: &Name,
    from: &Name,
    last: &Name,
) -> Result<(), Error> {
    let index = sharded::read_index(storage, &from.join(INDEX_FILE))?;
    let moved = blobs::relocate(index, from, last, folder)?;
    let last_index = last.join(INDEX_FILE);
    if storage.exists(&last_index)? {
        check_replace_index(storage, &last_index)?;
    }
    storage.prepare_dir(last)?;
    sharded::PendingIndex::checked(last_index, moved)?.publish_replacing(storage)?;
    Ok(())
}
