//! Deduplicated checkpoints: each tensor is a content-addressed blob, shared by every
//! checkpoint of the run that holds the same bytes under the same name; a checkpoint is an
//! index (`model.safetensors.index.json`, the layout sharded saves write) naming its blobs.
//!
//! A blob is a plain file of this project's format holding one tensor under its own name,
//! in the folder `blobs/` of the run's folder, named by the BLAKE3 hash of the tensor's
//! name, dtype, shape and bytes (never by the CRC, which is not made to tell contents apart):
//! `blobs/<64 hex digits>.safetensors`. The index names it relative to the checkpoint's
//! folder (`../blobs/….safetensors`), so that Hugging Face's index readers, and Python's
//! `safetensors` file by file, read a deduplicated checkpoint unchanged.
//!
//! Tensors that changed at the process's last save are expected to change again (trained
//! weights, optimizer moments): on a local folder they are written together as one **group
//! blob**, named by the BLAKE3 hash of their blob ids, which are computed while the group is
//! written (on the second core, beside the checksum): one pass over the bytes and one file,
//! where hashing first and one file per tensor cost twice a plain save. The others are
//! hashed first and written alone only if their blob is missing, so a frozen tensor is
//! stored once. A tensor in a group that turns out unchanged goes alone from the next save.
//!
//! A save writes the blobs it lacks (each committed and durable before the index), then the
//! index: no index, no checkpoint. Blobs are never rewritten, so replacing an index is
//! atomic for readers; the one exception is a blob found damaged (a blob this process did
//! not write is read whole and compared with its tensor before its first reuse), which is
//! written again, atomically, with the bytes its name says, so readers see the damaged blob
//! or the mended one. A blob goes only when no index in the run's folder names it, and
//! only one this run wrote (its header carries the run id), through the deletion gate
//! ([`collect`]): a crash at any point leaves every committed checkpoint whole and at most
//! blobs nothing names, which the run's next collection removes.

use std::collections::{BTreeMap, BTreeSet};

use super::codec::{self, Encoding, KEY_ENCODING};
use super::index::{
    is_blob_id, GlobalTensor, Index, Piece, ShardEntry, Sharded, DEDUP_FORMAT_VERSION, MAX_UP,
};
pub use super::index::{is_blob_reference, BLOBS_DIR};
use super::save::{PendingIndex, ShardInfo, KEY_SHARD};
use super::INDEX_FILE;
use crate::model::{Dtype, HostTensor, NamedTensor};
use crate::store::{
    self, gate, CheckpointFile, Commit, Kind, Meta, Name, ObjectMeta, SaveOptions, SaveReport,
    Storage, Verify, KEY_RUN_ID,
};
use crate::text::hex;
use crate::Error;

/// The most indexes [`collect`] reads in one collection (beyond that it deletes nothing).
const MAX_INDEXES: usize = 100_000;
/// How deep [`collect`] looks for indexes below the run's folder.
const INDEX_DEPTH: usize = 16;

/// The blob id of `tensor`: BLAKE3 of a tag, its name, dtype, shape and bytes.
///
/// # Errors
///
/// The tensor's own error while its bytes are read.
pub fn blob_id(tensor: &NamedTensor<'_>) -> Result<String, Error> {
    let mut hash = seeded(tensor);
    tensor
        .data
        .write_to(&mut |bytes| {
            hash.update(bytes);
            Ok(())
        })
        .map_err(|_| Error::TensorName {
            name: crate::text::shorten(&tensor.name, 200),
            reason: "its bytes could not be read to name its blob",
        })?;
    Ok(hex(hash.finalize().as_bytes()))
}

/// The hasher of [`blob_id`] before the tensor's bytes: the tag, name, dtype and shape.
fn seeded(tensor: &NamedTensor<'_>) -> blake3::Hasher {
    let mut hash = blake3::Hasher::new();
    hash.update(b"model-checkpoint blob 1\0");
    hash.update(&(tensor.name.len() as u64).to_le_bytes());
    hash.update(tensor.name.as_bytes());
    hash.update(format!("{:?}", tensor.data.dtype()).as_bytes());
    let shape = tensor.data.shape();
    hash.update(&(shape.len() as u64).to_le_bytes());
    for d in shape.iter() {
        hash.update(&(*d as u64).to_le_bytes());
    }
    hash
}

/// The id of a group blob: BLAKE3 of a tag and its tensors' blob ids, in order.
fn group_id(ids: &[String]) -> String {
    let mut hash = blake3::Hasher::new();
    hash.update(b"model-checkpoint group 1\0");
    for id in ids {
        hash.update(id.as_bytes());
    }
    hex(hash.finalize().as_bytes())
}

/// The blob folder of a run whose folder is `folder`.
pub fn blobs_dir(folder: &Name) -> Name {
    folder.join(BLOBS_DIR)
}

/// What this process knows of blobs that exist: id to its entry (size, header digest),
/// so that a blob confirmed once is not read again at every save; and, by tensor name, the
/// blob id at the last save and whether it had changed since the one before: a tensor that
/// changed is expected to change again.
#[derive(Debug, Default)]
pub struct KnownBlobs {
    /// Blob id to its entry.
    blobs: BTreeMap<String, Known>,
    /// Tensor name to its blob id at the last save, and whether that differed from the one
    /// before.
    history: BTreeMap<String, (String, bool)>,
}

impl KnownBlobs {
    /// Forgets the blobs a collection deleted.
    pub fn forget_collected(&mut self, collected: &Collected) {
        for name in collected.deleted.iter().chain(&collected.failed) {
            if let Some(id) = name
                .file_name()
                .and_then(|f| f.strip_suffix(".safetensors"))
            {
                self.forget(id);
            }
        }
    }

    /// Forgets every blob (a collection that did not finish may have deleted any): the
    /// next saves look each up again.
    pub fn forget_all(&mut self) {
        self.blobs.clear();
    }

    /// Whether tensor `name` changed between this process's last two saves.
    fn changing(&self, name: &str) -> bool {
        self.history.get(name).is_some_and(|(_, changed)| *changed)
    }

    /// Records that tensor `name` was saved as blob id `id`.
    fn saw(&mut self, name: &str, id: &str) {
        let changed = self.history.get(name).is_some_and(|(last, _)| last != id);
        self.history
            .insert(name.to_owned(), (id.to_owned(), changed));
    }
}

/// A blob known to exist: its index entry's facts.
#[derive(Clone, Debug, Default)]
struct Known {
    bytes: u64,
    digest: String,
    plain_bytes: Option<u64>,
}

impl Known {
    /// The entry of a blob just written.
    fn of(report: &SaveReport, plain_bytes: Option<u64>) -> Self {
        Known {
            bytes: report.bytes,
            digest: hex(&report.header_digest),
            plain_bytes,
        }
    }
}

impl KnownBlobs {
    /// Forgets `id` (a blob [`collect`] deleted).
    fn forget(&mut self, id: &str) {
        self.blobs.remove(id);
    }
}

/// A deduplicated save, ready to publish.
#[derive(Debug)]
pub struct DedupSave {
    /// The index to publish (the commit).
    pub index: PendingIndex,
    /// The checkpoint's head (the blob holding its metadata), and its header's SHA-256.
    pub head: (Name, [u8; 32]),
    /// Bytes of the blobs this save wrote.
    pub written_bytes: u64,
    /// Bytes of the tensors found in blobs already there.
    pub reused_bytes: u64,
}

/// Writes the blobs of `tensors` that `blobs` lacks, and the checkpoint's head (a blob with
/// no tensor whose metadata is `metadata` and the shard description, as a one-process
/// sharded save's only shard: what a restore reads the training state and the run from),
/// and makes the index of the checkpoint folder `dir`, for the caller to publish. Blobs
/// carry `run_id` (the head in `metadata`), which is what lets [`collect`] delete them.
/// With `compress`, the blobs this save writes are compressed where that pays
/// ([`codec`]); a blob already there is reused as it is, compressed or not.
///
/// # Errors
///
/// A blob that is there but is not the tensor its name says ([`Error::Corrupt`]); the
/// store's errors.
#[allow(clippy::too_many_arguments)]
pub fn save_dedup(
    storage: &dyn Storage,
    dir: &Name,
    blobs: &Name,
    save_id: &str,
    kind: Kind,
    tensors: Vec<NamedTensor<'_>>,
    metadata: &BTreeMap<String, String>,
    run_id: &str,
    compress: bool,
    known: &mut KnownBlobs,
) -> Result<DedupSave, Error> {
    let up = up_from(dir, &blobs.parent())?;
    let info = Meta {
        run_id: Some(run_id.to_owned()),
        ..Meta::default()
    }
    .to_info();
    storage.prepare_dir(blobs)?;
    let mut entries: BTreeMap<String, ShardEntry> = BTreeMap::new();
    let mut index_tensors = BTreeMap::new();
    let mut weight_map = BTreeMap::new();
    let (mut written_bytes, mut reused_bytes, mut total) = (0u64, 0u64, 0u64);
    // Tensors that changed at the last save are written together, as one group blob named
    // after its content, hashed while it is written (one pass, one file); the others are
    // hashed first and written, alone, only if their blob is not there. Compressed blobs
    // hold one tensor each, and a storage that names an object before writing it cannot
    // name it after its content: there every tensor goes alone.
    let grouping = !compress && storage.names_after_writing();
    let (group, tensors): (Vec<_>, Vec<_>) = tensors
        .into_iter()
        .partition(|t| grouping && known.changing(&t.name));
    if !group.is_empty() {
        let (rel, entry, written, ids) = write_group(storage, blobs, &up, &group, &info)?;
        written_bytes = written_bytes.saturating_add(written);
        for (tensor, id) in group.iter().zip(&ids) {
            known.saw(&tensor.name, id);
            total = total.saturating_add(tensor.data.byte_len() as u64);
            let (name, global) = whole_in(tensor, &rel);
            index_tensors.insert(name.clone(), global);
            weight_map.insert(name, rel.clone());
        }
        if written == 0 {
            let bytes = group.iter().map(|t| t.data.byte_len() as u64).sum::<u64>();
            reused_bytes = reused_bytes.saturating_add(bytes);
        }
        entries.insert(rel, entry);
    }
    for tensor in &tensors {
        let id = blob_id(tensor)?;
        known.saw(&tensor.name, &id);
        let name = blobs.join(&format!("{id}.safetensors"));
        let rel = format!("{up}{BLOBS_DIR}/{id}.safetensors");
        let len = tensor.data.byte_len() as u64;
        total = total.saturating_add(len);
        let entry = match known.blobs.get(&id) {
            Some(entry) => {
                reused_bytes = reused_bytes.saturating_add(len);
                entry.clone()
            }
            None => {
                let there = storage.exists(&name)?;
                let (entry, written) = if there {
                    reuse_blob(storage, &name, tensor, &info)?
                } else {
                    let options = SaveOptions {
                        commit: Commit::CreateNew,
                        ..SaveOptions::default()
                    };
                    match write_blob(storage, &name, tensor, &info, &options, compress) {
                        Ok(written) => written,
                        // Another save wrote it meanwhile: the same bytes.
                        Err(Error::AlreadyExists { .. }) => {
                            reuse_blob(storage, &name, tensor, &info)?
                        }
                        Err(e) => return Err(e),
                    }
                };
                if written == 0 {
                    reused_bytes = reused_bytes.saturating_add(len);
                } else {
                    written_bytes = written_bytes.saturating_add(written);
                }
                known.blobs.insert(id.clone(), entry.clone());
                entry
            }
        };
        let (name, global) = whole_in(tensor, &rel);
        index_tensors.insert(name.clone(), global);
        weight_map.insert(name, rel.clone());
        entries.entry(rel.clone()).or_insert(ShardEntry {
            file: rel,
            bytes: entry.bytes,
            header_sha256: entry.digest,
            plain_bytes: entry.plain_bytes,
        });
    }
    let listed = super::save::tensors_digest(&index_tensors);
    let (head, head_entry, head_bytes, head_digest) =
        write_head(storage, blobs, &up, save_id, kind, metadata, listed)?;
    written_bytes = written_bytes.saturating_add(head_bytes);
    let index = Index {
        metadata: BTreeMap::from([("total_size".to_owned(), serde_json::json!(total))]),
        weight_map,
        model_checkpoint: Sharded {
            format_version: DEDUP_FORMAT_VERSION,
            world_size: 1,
            save_id: save_id.to_owned(),
            shards: vec![head_entry],
            blobs: Some(entries.into_values().collect()),
            tensors: index_tensors,
            metadata: metadata.clone(),
        },
    };
    Ok(DedupSave {
        index: PendingIndex::checked(dir.join(INDEX_FILE), index)?,
        head: (head, head_digest),
        written_bytes,
        reused_bytes,
    })
}

/// `tensor` as the index describes it, whole in the one file `rel`: its name and entry.
fn whole_in(tensor: &NamedTensor<'_>, rel: &str) -> (String, GlobalTensor) {
    let shape = tensor.data.shape().to_vec();
    let global = GlobalTensor {
        dtype: format!("{:?}", tensor.data.dtype()),
        global_shape: shape.clone(),
        pieces: vec![Piece {
            file: rel.to_owned(),
            offsets: vec![0; shape.len()],
            shape,
        }],
    };
    (tensor.name.clone(), global)
}

/// Writes `tensors` as one group blob named after its content (the BLAKE3 of their blob
/// ids, which are computed as the bytes are written), or finds it there: its reference
/// (with `up`), its index entry, the bytes written (0 when it was there) and the tensors'
/// blob ids.
fn write_group(
    storage: &dyn Storage,
    blobs: &Name,
    up: &str,
    tensors: &[NamedTensor<'_>],
    info: &BTreeMap<String, String>,
) -> Result<(String, ShardEntry, u64, Vec<String>), Error> {
    let ids_of = |hs: &[blake3::Hasher]| -> Vec<String> {
        hs.iter().map(|h| hex(h.finalize().as_bytes())).collect()
    };
    let name_of = |hs: &[blake3::Hasher]| format!("{}.safetensors", group_id(&ids_of(hs)));
    let save = |commit: Commit, info: &BTreeMap<String, String>| {
        let mut hashers: Vec<blake3::Hasher> = tensors.iter().map(seeded).collect();
        let options = SaveOptions {
            commit,
            ..SaveOptions::default()
        };
        let saved = store::save_by_content(
            storage,
            blobs,
            Kind::Weights,
            tensors,
            info,
            &options,
            store::ContentName {
                hashers: &mut hashers,
                name_of: &name_of,
            },
        );
        (saved, ids_of(&hashers))
    };
    let (saved, ids) = save(Commit::CreateNew, info);
    let id = group_id(&ids);
    let name = blobs.join(&format!("{id}.safetensors"));
    let (entry, written) = match saved {
        Ok(report) => (Known::of(&report, None), report.bytes),
        // The same tensors were saved together before: that group is this one, unless it
        // was damaged since.
        Err(Error::AlreadyExists { .. }) => match check_group(storage, &name, tensors)? {
            Ok(entry) => (entry, 0),
            Err((damage, file)) => {
                let info = damage.mend(storage, &name, &file, info)?;
                let report = save(Commit::Replace, &info).0?;
                let mended = Known::of(&report, None);
                damage.mended(&name, &file, &mended);
                (mended, report.bytes)
            }
        },
        Err(e) => return Err(e),
    };
    let rel = format!("{up}{BLOBS_DIR}/{id}.safetensors");
    let index_entry = ShardEntry {
        file: rel.clone(),
        bytes: entry.bytes,
        header_sha256: entry.digest,
        plain_bytes: None,
    };
    Ok((rel, index_entry, written, ids))
}

/// Whether `file` holds exactly `tensors`, by name, dtype and shape, and nothing else.
fn holds_exactly(file: &CheckpointFile, tensors: &[NamedTensor<'_>]) -> bool {
    file.tensors().count() == tensors.len()
        && tensors.iter().all(|t| {
            file.tensor(&t.name).is_some_and(|stored| {
                stored.dtype == t.data.dtype() && stored.shape == t.data.shape().as_ref()
            })
        })
}

/// A group blob already there, checked to hold exactly `tensors` by name, dtype and shape,
/// and read whole: its entry, or why its bytes cannot be reused ([`damage`]) and the file.
fn check_group(
    storage: &dyn Storage,
    name: &Name,
    tensors: &[NamedTensor<'_>],
) -> Result<Result<Known, (Damage, CheckpointFile)>, Error> {
    let file = open_found(storage, name)?;
    if !holds_exactly(&file, tensors) {
        return Err(Error::Corrupt {
            path: name.clone(),
            reason: "it is not the group of tensors its name says".to_owned(),
        });
    }
    Ok(match damage(&file, tensors)? {
        Some(damage) => Err((damage, file)),
        None => Ok(Known {
            bytes: file.len(),
            digest: hex(&file.header_digest()),
            plain_bytes: None,
        }),
    })
}

/// Writes the head of save `save_id`: a blob with no tensor, whose metadata is `metadata`
/// and the shard description (with `tensors`, the digest of the index's tensors), named by
/// the BLAKE3 hash of both. Returns its name, its entry in the index (named with `up` before
/// the blob folder), the bytes written (0 when it was there) and its header's SHA-256.
fn write_head(
    storage: &dyn Storage,
    blobs: &Name,
    up: &str,
    save_id: &str,
    kind: Kind,
    metadata: &BTreeMap<String, String>,
    tensors: String,
) -> Result<(Name, ShardEntry, u64, [u8; 32]), Error> {
    let shard = ShardInfo {
        rank: 0,
        world_size: 1,
        save_id: save_id.to_owned(),
        tensors,
        ..ShardInfo::default()
    };
    let mut info = metadata.clone();
    info.insert(
        KEY_SHARD.to_owned(),
        serde_json::to_string(&shard).map_err(|e| Error::Corrupt {
            path: blobs.clone(),
            reason: format!("the shard description cannot be written: {e}"),
        })?,
    );
    let mut hash = blake3::Hasher::new();
    hash.update(b"model-checkpoint head 1\0");
    hash.update(kind.as_str().as_bytes());
    for (k, v) in &info {
        for part in [k, v] {
            hash.update(&(part.len() as u64).to_le_bytes());
            hash.update(part.as_bytes());
        }
    }
    let id = hex(hash.finalize().as_bytes());
    let name = blobs.join(&format!("{id}.safetensors"));
    let save = |commit| {
        let options = SaveOptions {
            commit,
            ..SaveOptions::default()
        };
        store::save_to(storage, &name, kind, &[], &info, &options)
            .map(|report| (report.bytes, report.header_digest, report.bytes))
    };
    let (bytes, digest, written) = match save(Commit::CreateNew) {
        Err(Error::AlreadyExists { .. }) => {
            // The same head, saved before; unless what is there is not what its name says.
            let file = open_found(storage, &name)?;
            let recorded = file
                .info()
                .iter()
                .filter(|(k, _)| !store::RESERVED_KEYS.contains(&k.as_str()));
            let holds = file.has_checksums() && file.kind() == kind && recorded.eq(info.iter());
            if holds {
                (file.len(), file.header_digest(), 0)
            } else {
                let why = "its metadata is not the checkpoint's its name says".to_owned();
                Damage::Content(why).mend(storage, &name, &file, &info)?;
                save(Commit::Replace)?
            }
        }
        saved => saved?,
    };
    let entry = ShardEntry {
        file: format!("{up}{BLOBS_DIR}/{id}.safetensors"),
        bytes,
        header_sha256: hex(&digest),
        plain_bytes: None,
    };
    Ok((name, entry, written, digest))
}

/// The references from a checkpoint folder `dir` up to the blob folder of the run folder
/// `folder`: `../` once per level.
fn up_from(dir: &Name, folder: &Name) -> Result<String, Error> {
    let levels = dir
        .strip_prefix(folder)
        .map_or(0, |rest| rest.split('/').filter(|c| !c.is_empty()).count());
    if levels == 0 || levels > MAX_UP {
        return Err(Error::BadLocation {
            location: crate::text::shorten(dir.as_str(), 200),
            reason: format!(
                "a deduplicated checkpoint must lie below {folder}, at most {MAX_UP} levels down"
            ),
        });
    }
    Ok("../".repeat(levels))
}

/// `index` (of the deduplicated checkpoint in `from`) as the folder `to` names the same
/// blobs, both below the run folder `folder`: what `save_last`'s `last/` holds.
///
/// # Errors
///
/// `to` not below `folder` ([`Error::BadLocation`]); a reference that leaves the blob
/// folder ([`Error::Corrupt`]).
pub fn relocate(mut index: Index, from: &Name, to: &Name, folder: &Name) -> Result<Index, Error> {
    let up = up_from(to, folder)?;
    let blobs = blobs_dir(folder);
    let moved = |file: &mut String| -> Result<(), Error> {
        let rest = from
            .join(file)
            .strip_prefix(&blobs)
            .filter(|rest| !rest.contains('/'))
            .ok_or_else(|| Error::Corrupt {
                path: from.join(INDEX_FILE),
                reason: format!("{:?} is not in {blobs}", crate::text::shorten(file, 100)),
            })?;
        *file = format!("{up}{BLOBS_DIR}/{rest}");
        Ok(())
    };
    let s = &mut index.model_checkpoint;
    for entry in s.shards.iter_mut().chain(s.blobs.iter_mut().flatten()) {
        moved(&mut entry.file)?;
    }
    for t in s.tensors.values_mut() {
        for piece in &mut t.pieces {
            moved(&mut piece.file)?;
        }
    }
    for file in index.weight_map.values_mut() {
        moved(file)?;
    }
    Ok(index)
}

/// A blob already there, reused: checked to hold `tensor`'s name, dtype and shape, plain
/// or compressed, and read whole (once a process: it is then known). A blob whose bytes
/// were damaged since it was written is written again with the bytes its name says,
/// through the gate (as a shard this tool wrote), so that the checkpoint this save makes
/// verifies, and the older ones that name the blob do again. Its entry, and the bytes
/// written (0 when reused).
fn reuse_blob(
    storage: &dyn Storage,
    name: &Name,
    tensor: &NamedTensor<'_>,
    info: &BTreeMap<String, String>,
) -> Result<(Known, u64), Error> {
    let file = open_found(storage, name)?;
    let (dtype, shape) = (tensor.data.dtype(), tensor.data.shape());
    let (holds, plain_bytes) = match Encoding::of(&file)? {
        Some(encoding) => {
            let stored = file.tensor(&tensor.name).map_or(0, |t| t.len as u64);
            let plain = file
                .len()
                .saturating_sub(stored)
                .saturating_add(tensor.data.byte_len() as u64);
            let holds = file.tensor(&tensor.name).is_some()
                && encoding.dtype == dtype
                && encoding.shape == shape.as_ref();
            (holds, Some(plain))
        }
        None => (holds_exactly(&file, std::slice::from_ref(tensor)), None),
    };
    if !holds {
        return Err(Error::Corrupt {
            path: name.clone(),
            reason: format!(
                "it is not the blob of tensor {:?} its name says",
                crate::text::shorten(&tensor.name, 100)
            ),
        });
    }
    let Some(damage) = damage(&file, std::slice::from_ref(tensor))? else {
        let known = Known {
            bytes: file.len(),
            digest: hex(&file.header_digest()),
            plain_bytes,
        };
        return Ok((known, 0));
    };
    let info = damage.mend(storage, name, &file, info)?;
    let compress = Encoding::of(&file)?.is_some();
    let options = SaveOptions {
        commit: Commit::Replace,
        ..SaveOptions::default()
    };
    let mended = write_blob(storage, name, tensor, &info, &options, compress)?;
    damage.mended(name, &file, &mended.0);
    Ok(mended)
}

/// The blob `name`, found there, opened by its header. One whose header does not read
/// cannot be proven to be this tool's, so it is not replaced: the error says so.
fn open_found(storage: &dyn Storage, name: &Name) -> Result<CheckpointFile, Error> {
    CheckpointFile::open_in(storage, name, Verify::HeaderOnly).map_err(|e| match e {
        Error::Corrupt { path, reason } => Error::Corrupt {
            path,
            reason: format!(
                "{reason}; a blob that does not open is not replaced: move it away, and \
                 the next save writes it again"
            ),
        },
        e => e,
    })
}

/// Why a blob found there cannot be reused as it is.
enum Damage {
    /// Its bytes fail their checksums (or it has none): its header is the one written.
    Bytes(String),
    /// Its checksums hold but its bytes are not the tensors': it was written with other
    /// bytes under this name (by hand, or by a faulty writer), and its header with them.
    Content(String),
}

impl Damage {
    /// Asks the gate whether the blob `name`, found as `file`, may be written again (a
    /// shard this tool wrote, of any run: a blob's name says its bytes, whoever wrote it),
    /// says so, and gives the metadata to write it with. Damaged bytes are written as they
    /// were first (its run; the caller keeps its encoding), so that its header is the one
    /// the indexes that name it committed and they verify again; a header that came with
    /// other bytes says nothing of the first, and this save's `info` is used.
    fn mend(
        &self,
        storage: &dyn Storage,
        name: &Name,
        file: &CheckpointFile,
        info: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, Error> {
        gate::check_replace(storage, name, gate::Claim::ShardedPart { run_id: None })?;
        let mut info = info.clone();
        match self {
            Damage::Bytes(why) => {
                log::warn!(
                    target: "model_checkpoint",
                    "blob {name} is damaged: {why}. It is written again as it was first \
                     written, so that the checkpoints that name it verify again; check the \
                     storage it is on"
                );
                if let Some(run_id) = file.info().get(KEY_RUN_ID) {
                    info.insert(KEY_RUN_ID.to_owned(), run_id.clone());
                }
            }
            Damage::Content(why) => log::warn!(
                target: "model_checkpoint",
                "blob {name} does not hold what its name says: {why}. It is written again \
                 with this save's header; checkpoints that named it before it was replaced \
                 do not open"
            ),
        }
        Ok(info)
    }

    /// Says so when damaged bytes, written again as `mended`, have another header than
    /// `file` had (it was written by another version of this tool): the indexes that name
    /// it do not open.
    fn mended(&self, name: &Name, file: &CheckpointFile, mended: &Known) {
        if matches!(self, Damage::Bytes(_)) && mended.digest != hex(&file.header_digest()) {
            log::warn!(
                target: "model_checkpoint",
                "blob {name} was written again with another header than the one the \
                 checkpoints that name it committed: they do not open"
            );
        }
    }
}

/// Why `file`, a blob found there, cannot be reused as it is for `tensors`, or `None` when
/// it holds exactly their bytes (decoded, when it is compressed): one read of the file,
/// compared as it is read.
fn damage(file: &CheckpointFile, tensors: &[NamedTensor<'_>]) -> Result<Option<Damage>, Error> {
    if !file.has_checksums() {
        return Ok(Some(Damage::Bytes("it has no checksums".to_owned())));
    }
    let encoding = Encoding::of(file)?;
    for tensor in tensors {
        let same = match &encoding {
            None => file.holds_bytes(&tensor.name, &*tensor.data),
            Some(encoding) => file
                .read(&tensor.name)
                .and_then(|stored| encoding.decode(file, &stored))
                .and_then(|plain| same_bytes(tensor, &plain)),
        };
        match same {
            Ok(true) => {}
            Ok(false) => {
                return Ok(Some(Damage::Content(format!(
                    "its bytes are not those of tensor {:?}, which its name says",
                    crate::text::shorten(&tensor.name, 100)
                ))))
            }
            Err(Error::Corrupt { reason, .. }) => return Ok(Some(Damage::Bytes(reason))),
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Whether `tensor`'s bytes are `bytes`.
fn same_bytes(tensor: &NamedTensor<'_>, bytes: &[u8]) -> Result<bool, Error> {
    if tensor.data.byte_len() != bytes.len() {
        return Ok(false);
    }
    let (mut at, mut same) = (0usize, true);
    tensor
        .data
        .write_to(&mut |piece| {
            let end = at.saturating_add(piece.len());
            same &= bytes.get(at..end) == Some(piece);
            at = end;
            Ok(())
        })
        .map_err(|_| Error::TensorName {
            name: crate::text::shorten(&tensor.name, 200),
            reason: "its bytes could not be read to compare them with a stored copy",
        })?;
    Ok(same && at == bytes.len())
}

/// Writes the blob `name` of `tensor`, compressed when `compress` and that pays
/// ([`codec::encode`]); its entry and the bytes written.
fn write_blob(
    storage: &dyn Storage,
    name: &Name,
    tensor: &NamedTensor<'_>,
    info: &BTreeMap<String, String>,
    options: &SaveOptions,
    compress: bool,
) -> Result<(Known, u64), Error> {
    let known = |report: &SaveReport, plain_bytes| (Known::of(report, plain_bytes), report.bytes);
    let encoded = if compress {
        codec::encode(tensor)?
    } else {
        None
    };
    let Some((stored, encoding)) = encoded else {
        let report = store::save_to(
            storage,
            name,
            Kind::Weights,
            std::slice::from_ref(tensor),
            info,
            options,
        )?;
        return Ok(known(&report, None));
    };
    let stored_len = stored.len() as u64;
    let data = HostTensor::new(Dtype::U8, vec![stored.len()], stored)?;
    let mut info = info.clone();
    info.insert(KEY_ENCODING.to_owned(), encoding.to_text());
    let report = store::save_to(
        storage,
        name,
        Kind::Weights,
        &[NamedTensor::new(tensor.name.clone(), data)],
        &info,
        options,
    )?;
    let plain = report
        .bytes
        .saturating_sub(stored_len)
        .saturating_add(tensor.data.byte_len() as u64);
    Ok(known(&report, Some(plain)))
}

/// What [`collect`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Collected {
    /// Blobs deleted.
    pub deleted: Vec<Name>,
    /// Blobs whose delete failed (they may be gone all the same: a reply lost on the way).
    pub failed: Vec<Name>,
    /// Bytes they held.
    pub bytes: u64,
}

/// The blobs in a run folder's blob folder, and which of them the indexes below the run
/// folder name.
#[derive(Debug, Default)]
pub struct Survey {
    /// Every blob in the blob folder (its lock and temporary files left out).
    pub blobs: Vec<ObjectMeta>,
    /// Every file an index names (heads and blobs), resolved.
    pub named: BTreeSet<Name>,
    /// The bytes of every object listed below the run folder (what it holds).
    pub bytes: u64,
    /// Why some index was not read (it does not parse, or there are more than the bound):
    /// then a blob may be named and not known to be. `None` when every index was read.
    pub unread: Option<String>,
}

impl Survey {
    /// The blobs no index read names.
    pub fn unnamed(&self) -> impl Iterator<Item = &ObjectMeta> {
        self.blobs.iter().filter(|b| !self.named.contains(&b.name))
    }
}

/// Lists `folder` (down to 16 levels) once: its blob folder's blobs, and every index below
/// it, read (at most 100,000).
///
/// # Errors
///
/// The storage's errors while listing.
pub fn survey(storage: &dyn Storage, folder: &Name) -> Result<Survey, Error> {
    let blobs = blobs_dir(folder);
    let mut survey = Survey::default();
    let mut indexes = 0usize;
    for object in storage.list(folder, INDEX_DEPTH)? {
        survey.bytes = survey.bytes.saturating_add(object.size);
        if object.name.parent() == blobs {
            let is_blob = object
                .name
                .file_name()
                .and_then(|f| f.strip_suffix(".safetensors"))
                .is_some_and(is_blob_id);
            if is_blob {
                survey.blobs.push(object);
            }
            continue;
        }
        if object.name.file_name() != Some(INDEX_FILE) {
            continue;
        }
        indexes += 1;
        if indexes > MAX_INDEXES {
            survey.unread = Some(format!("more than {MAX_INDEXES} indexes"));
            break;
        }
        let index = match super::read_index(storage, &object.name) {
            Ok(index) => index,
            // Gone since the listing (another index replaced): names nothing now.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                continue
            }
            Err(e) => {
                survey.unread.get_or_insert(e.to_string());
                continue;
            }
        };
        let dir = object.name.parent();
        let s = &index.model_checkpoint;
        for blob in s.shards.iter().chain(s.blobs.iter().flatten()) {
            survey.named.insert(dir.join(&blob.file));
        }
    }
    Ok(survey)
}

/// Deletes the blobs in `folder`'s blob folder that no index below `folder` names and that
/// run `run_id` wrote, through the deletion gate (a process that caches which blobs exist
/// forgets the deleted ones: [`KnownBlobs::forget_collected`]). An index that cannot be read stops the
/// collection (nothing is deleted: a blob it may name stays).
///
/// # Errors
///
/// The storage's errors while listing; deletes that fail are logged and left for the next
/// collection.
pub fn collect(storage: &dyn Storage, folder: &Name, run_id: &str) -> Result<Collected, Error> {
    let survey = survey(storage, folder)?;
    if let Some(why) = &survey.unread {
        log::warn!(target: "model_checkpoint", "blobs in {} not collected: {why}", blobs_dir(folder));
        return Ok(Collected::default());
    }
    let mut collected = Collected::default();
    for object in survey.unnamed() {
        let claim = gate::Claim::ShardedPart {
            run_id: Some(run_id),
        };
        match gate::delete(storage, &object.name, claim) {
            Ok(()) => {
                collected.bytes = collected.bytes.saturating_add(object.size);
                collected.deleted.push(object.name.clone());
            }
            // Another run's blob: never this run's to delete.
            Err(Error::NotOurs { .. }) => {}
            Err(e) => {
                log::warn!(target: "model_checkpoint", "cannot remove {}: {e}", object.name);
                collected.failed.push(object.name.clone());
            }
        }
    }
    Ok(collected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_references_are_strict() {
        let id = "a".repeat(64);
        assert!(is_blob_reference(&format!("../blobs/{id}.safetensors")));
        assert!(is_blob_reference(&format!("../../blobs/{id}.safetensors")));
        for bad in [
            format!("blobs/{id}.safetensors"),
            format!("../blobs/{}.safetensors", "A".repeat(64)),
            format!("../blobs/{}.safetensors", "a".repeat(63)),
            format!("../x/../blobs/{id}.safetensors"),
            format!("../blobs/{id}.safetensors/"),
            format!("/../blobs/{id}.safetensors"),
            format!("{}blobs/{id}.safetensors", "../".repeat(65)),
        ] {
            assert!(!is_blob_reference(&bad), "{bad}");
        }
    }
}
