//! Loading a sharded checkpoint, into any number of processes: the index is read and
//! checked, every shard is opened and must be the exact version the index committed (its
//! header's SHA-256), and a tensor, or any box of it, is assembled from the pieces that
//! overlap it. Each piece read is checked against its CRC-32; a rank asking for its own
//! slice reads only the pieces that overlap it.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::codec::Encoding;
use super::index::{
    copy_box, overlap, volume, GlobalTensor, Index, Region, INDEX_FILE, MAX_INDEX_BYTES,
};
use super::save::open_shard_named;
use crate::model::{Dtype, HostTensor, NamedTensor, TensorData};
use crate::store::{self, CheckpointFile, Kind, Name, SaveOptions, SaveReport, Storage, Verify};
use crate::Error;

/// A committed sharded checkpoint, open for reading.
pub struct ShardedCheckpoint {
    dir: Name,
    index: Index,
    /// The shards (by their file names) or the blobs (by the index's references to them),
    /// opened with their headers verified.
    files: BTreeMap<String, CheckpointFile>,
    /// The compressed blobs' encodings, by the same keys.
    encodings: BTreeMap<String, Encoding>,
}

/// Reads a small object whole, refusing one over `limit` bytes; a missing one is `NotFound`.
fn read_small(storage: &dyn Storage, name: &Name, limit: u64) -> Result<Vec<u8>, Error> {
    crate::store::read_small(storage, name, limit, "an index")?.ok_or_else(|| Error::Io {
        action: "read",
        path: name.clone(),
        source: std::io::ErrorKind::NotFound.into(),
    })
}

/// Whether the index lists what the shard `entry` (`file`, its header pinned by the index's
/// digest) says the save held: every tensor the shard holds but its rank's own state, with
/// a piece in that shard, and, for a deduplicated checkpoint's head, the digest of the
/// index's tensors it recorded. An index that lost a tensor from both its lists, every file
/// it names whole, would else verify.
fn lists_what_its_shard_holds(
    dir: &Name,
    index: &Index,
    entry: &super::ShardEntry,
    file: &CheckpointFile,
    info: &super::save::ShardInfo,
) -> Result<(), Error> {
    let tensors = &index.model_checkpoint.tensors;
    let damaged = |what: String| Error::Corrupt {
        path: dir.join(INDEX_FILE),
        reason: format!("{what}: the index was edited or damaged"),
    };
    if !info.tensors.is_empty() && info.tensors != super::save::tensors_digest(tensors) {
        return Err(damaged(format!(
            "its tensors are not the ones its head ({}) recorded",
            entry.file
        )));
    }
    let own: std::collections::BTreeSet<&str> = info.per_rank.iter().map(String::as_str).collect();
    for name in file.tensors().map(|t| t.name).filter(|n| !own.contains(n)) {
        let listed = tensors
            .get(name)
            .is_some_and(|t| t.pieces.iter().any(|p| p.file == entry.file));
        if !listed {
            return Err(damaged(format!(
                "{} holds a piece of tensor {:?}, which the index does not list there",
                entry.file,
                crate::text::shorten(name, 200)
            )));
        }
    }
    Ok(())
}

impl ShardedCheckpoint {
    /// Opens the sharded checkpoint in folder `dir` of `storage`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] (`NotFound`) when `dir` has no index (an interrupted save is not a
    /// checkpoint); [`Error::Corrupt`] for a malformed index, a missing shard, a shard
    /// that is not the one the index committed, or an index whose metadata differs from
    /// its first shard's in a key both carry.
    pub fn open(storage: &dyn Storage, dir: &Name) -> Result<Self, Error> {
        let index = read_index(storage, &dir.join(INDEX_FILE))?;
        let s = &index.model_checkpoint;
        let mut files = BTreeMap::new();
        let mut encodings = BTreeMap::new();
        let same = |file: &CheckpointFile, entry: &super::ShardEntry, what: &str| {
            let digest = crate::text::hex(&file.header_digest());
            if digest != entry.header_sha256 || file.len() != entry.bytes {
                return Err(Error::Corrupt {
                    path: file.path().clone(),
                    reason: format!("it is not the {what} the index committed (another version)"),
                });
            }
            Ok(())
        };
        for (rank, entry) in s.shards.iter().enumerate() {
            // Named as the parser checked: `shard-…` here, or a blob for a deduplicated
            // checkpoint's head.
            let (file, info) = open_shard_named(
                storage,
                &dir.join(&entry.file),
                rank,
                s.world_size,
                Some(&s.save_id),
            )?;
            same(&file, entry, "shard")?;
            lists_what_its_shard_holds(dir, &index, entry, &file, &info)?;
            files.insert(entry.file.clone(), file);
        }
        for entry in s.blobs.iter().flatten() {
            if files.contains_key(&entry.file) {
                continue;
            }
            // The reference was checked by the index's parser: `../`, then the blob folder.
            let file =
                CheckpointFile::open_in(storage, &dir.join(&entry.file), Verify::HeaderOnly)?;
            same(&file, entry, "blob")?;
            if let Some(encoding) = Encoding::of(&file)? {
                encodings.insert(entry.file.clone(), encoding);
            }
            files.insert(entry.file.clone(), file);
        }
        let checkpoint = ShardedCheckpoint {
            dir: dir.clone(),
            index,
            files,
            encodings,
        };
        // The index carries no checksum of its own; its metadata (epoch, step, training
        // state: what `latest` orders by and a resume restores) is also in its first
        // shard's header, which is checksummed and pinned by its digest. A value they both
        // carry must agree, so that a damaged index is not taken for another epoch.
        if let Some(head) = checkpoint.shard(0) {
            let index = &checkpoint.index.model_checkpoint.metadata;
            if let Some(key) = index
                .iter()
                .find(|&(key, value)| head.info().get(key).is_some_and(|v| v != value))
                .map(|(key, _)| key)
            {
                return Err(Error::Corrupt {
                    path: dir.join(INDEX_FILE),
                    reason: format!(
                        "its metadata's {:?} is not the one its first shard ({}) records: the index is damaged",
                        crate::text::shorten(key, 64),
                        head.path().display()
                    ),
                });
            }
        }
        // Every piece the index names is in its shard, with the index's shape and dtype.
        for (name, t) in &checkpoint.index.model_checkpoint.tensors {
            checkpoint.dtype_of(name, t)?;
        }
        Ok(checkpoint)
    }

    /// The folder.
    pub fn dir(&self) -> &Name {
        &self.dir
    }

    /// The index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The number of processes that saved it.
    pub fn world_size(&self) -> usize {
        self.index.model_checkpoint.world_size
    }

    /// The shard rank `rank` wrote (for per-rank state: its generator, its data cursor).
    pub fn shard(&self, rank: usize) -> Option<&CheckpointFile> {
        let entry = self.index.model_checkpoint.shards.get(rank)?;
        self.files.get(&entry.file)
    }

    /// Whether it is a deduplicated checkpoint (blobs, not shards).
    pub fn is_dedup(&self) -> bool {
        self.index.model_checkpoint.blobs.is_some()
    }

    /// The files it is made of (shards or blobs) as the index names them, opened.
    pub fn files(&self) -> impl Iterator<Item = (&str, &CheckpointFile)> {
        self.files.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Verifies every byte of the file the index names `key` (as [`ShardedCheckpoint::files`]
    /// lists them): every tensor against its checksum, and a compressed blob's decoded bytes
    /// against theirs.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] naming the file; [`Error::MissingTensor`] for a key it lacks.
    pub fn verify_file(&self, key: &str) -> Result<(), Error> {
        let file = self.files.get(key).ok_or_else(|| Error::MissingTensor {
            path: self.dir.join(INDEX_FILE),
            name: crate::text::shorten(key, 200),
        })?;
        match self.encodings.get(key) {
            // Its one tensor, read (checked) and decoded (checked again).
            Some(encoding) => file
                .tensors()
                .try_for_each(|t| encoding.decode(file, &file.read(t.name)?).map(drop)),
            None => file.verify_tensors(),
        }
    }

    /// Verifies every byte of every file it is made of ([`ShardedCheckpoint::verify_file`]).
    ///
    /// # Errors
    ///
    /// As [`ShardedCheckpoint::verify_file`], for the first file that fails.
    pub fn verify(&self) -> Result<(), Error> {
        self.files.keys().try_for_each(|key| self.verify_file(key))
    }

    /// Every tensor, by name.
    pub fn tensors(&self) -> &BTreeMap<String, GlobalTensor> {
        &self.index.model_checkpoint.tensors
    }

    /// The dtype of tensor `name`, checked against every piece's shard.
    pub(crate) fn dtype_of(&self, name: &str, t: &GlobalTensor) -> Result<Dtype, Error> {
        let mut dtype = None;
        for piece in &t.pieces {
            let shard = self
                .files
                .get(&piece.file)
                .ok_or_else(|| self.corrupt(name, "a piece names no shard"))?;
            let stored = shard
                .tensor(name)
                .ok_or_else(|| self.corrupt(name, "a piece is missing from its shard"))?;
            // A compressed blob's tensor is its bytes; its encoding says what they decode to.
            let (stored_dtype, stored_shape) = match self.encodings.get(&piece.file) {
                Some(e) => (e.dtype, e.shape.as_slice()),
                None => (stored.dtype, stored.shape),
            };
            if stored_shape != piece.shape.as_slice() {
                return Err(self.corrupt(name, "a piece's shape differs from its shard's"));
            }
            if dtype.is_some_and(|d| d != stored_dtype) || format!("{stored_dtype:?}") != t.dtype {
                return Err(self.corrupt(name, "its pieces' dtypes differ"));
            }
            dtype = Some(stored_dtype);
        }
        let dtype = dtype.ok_or_else(|| self.corrupt(name, "it has no pieces"))?;
        if dtype.bitsize() % 8 != 0 {
            return Err(self.corrupt(name, "sub-byte dtypes cannot be resharded"));
        }
        Ok(dtype)
    }

    fn corrupt(&self, name: &str, reason: &str) -> Error {
        Error::Corrupt {
            path: self.dir.join(INDEX_FILE),
            reason: format!("tensor {:?}: {reason}", crate::text::shorten(name, 100)),
        }
    }

    /// The whole tensor `name`, assembled from its pieces.
    ///
    /// # Errors
    ///
    /// [`Error::MissingTensor`]; a piece that fails its checksum; memory that cannot be had.
    pub fn read(&self, name: &str) -> Result<HostTensor, Error> {
        let t = self.global(name)?;
        let zeros = vec![0; t.global_shape.len()];
        let shape = t.global_shape.clone();
        self.read_region(name, &zeros, &shape)
    }

    fn global(&self, name: &str) -> Result<&GlobalTensor, Error> {
        self.tensors()
            .get(name)
            .ok_or_else(|| Error::MissingTensor {
                path: self.dir.join(INDEX_FILE),
                name: crate::text::shorten(name, 200),
            })
    }

    /// The box of tensor `name` starting at `offsets` with `shape` (a rank's slice in a
    /// world of any size): only the pieces that overlap it are read.
    ///
    /// # Errors
    ///
    /// As [`ShardedCheckpoint::read`]; a box outside the tensor ([`Error::ShapeMismatch`]).
    pub fn read_region(
        &self,
        name: &str,
        offsets: &[usize],
        shape: &[usize],
    ) -> Result<HostTensor, Error> {
        let t = self.global(name)?;
        let inside = offsets.len() == t.global_shape.len()
            && shape.len() == t.global_shape.len()
            && (0..shape.len()).all(|d| {
                offsets[d]
                    .checked_add(shape[d])
                    .is_some_and(|end| end <= t.global_shape[d])
            });
        if !inside {
            return Err(Error::ShapeMismatch {
                path: self.dir.join(INDEX_FILE),
                name: crate::text::shorten(name, 200),
                expected: t.global_shape.clone(),
                found: shape.to_vec(),
            });
        }
        let dtype = self.dtype_of(name, t)?;
        let elem = dtype.bitsize() / 8;
        let bytes = volume(shape)
            .and_then(|n| n.checked_mul(elem))
            .ok_or_else(|| self.corrupt(name, "the box is too large"))?;
        let mut out = Vec::new();
        out.try_reserve_exact(bytes).map_err(|_| Error::TooLarge {
            what: crate::text::shorten(name, 200),
            reason: format!("{bytes} bytes cannot be allocated"),
        })?;
        out.resize(bytes, 0);
        let dst = Region {
            off: offsets,
            shape,
        };
        for piece in &t.pieces {
            let Some((r_off, r_shape)) = overlap(&piece.offsets, &piece.shape, offsets, shape)
            else {
                continue;
            };
            let shard = self
                .files
                .get(&piece.file)
                .ok_or_else(|| self.corrupt(name, "a piece names no shard"))?;
            // The whole piece, so that its checksum is checked (and a compressed one's
            // decoded bytes against theirs).
            let src = match self.encodings.get(&piece.file) {
                Some(encoding) => encoding.decode(shard, &shard.read(name)?)?,
                None => shard.read(name)?,
            };
            copy_box(
                elem,
                (
                    &src,
                    Region {
                        off: &piece.offsets,
                        shape: &piece.shape,
                    },
                ),
                (&mut out, dst),
                Region {
                    off: &r_off,
                    shape: &r_shape,
                },
            );
        }
        HostTensor::new(dtype, shape.to_vec(), out)
    }

    /// Writes one plain checkpoint file holding every global tensor but the training state,
    /// as `name` in `storage` (which may hold nothing there yet, or an earlier
    /// consolidated file: see [`store::gate::Claim::Derived`]): tensors are assembled one at a time while the file is written, so memory
    /// holds at most one global tensor (and one piece).
    ///
    /// # Errors
    ///
    /// As [`ShardedCheckpoint::read`], and the store's errors.
    pub fn consolidate(&self, storage: &dyn Storage, name: &Name) -> Result<SaveReport, Error> {
        self.write_plain(storage, name, false)
    }

    /// Writes a checkpoint saved by one process (a deduplicated one) whole as one plain
    /// file: its weights, its training tensors and its training state, a full checkpoint
    /// again when it was one; as [`ShardedCheckpoint::consolidate`] otherwise.
    ///
    /// # Errors
    ///
    /// [`Error::BadLocation`] for a checkpoint of more than one process (whose per-rank
    /// state has no place in one file); as [`ShardedCheckpoint::consolidate`].
    pub fn export_whole(&self, storage: &dyn Storage, name: &Name) -> Result<SaveReport, Error> {
        if self.world_size() != 1 {
            return Err(Error::BadLocation {
                location: self.dir.to_string(),
                reason: format!(
                    "a checkpoint of {} processes keeps per-rank state in its shards: export its weights only",
                    self.world_size()
                ),
            });
        }
        self.write_plain(storage, name, true)
    }

    /// The plain file of [`ShardedCheckpoint::consolidate`] (`whole`: with the training
    /// tensors and state, of a one-process checkpoint).
    fn write_plain(
        &self,
        storage: &dyn Storage,
        name: &Name,
        whole: bool,
    ) -> Result<SaveReport, Error> {
        // Only a file consolidate wrote may be replaced: never a shard or the index it reads
        // (an output never replaces an input), nor any other file.
        store::gate::check_replace(storage, name, store::gate::Claim::Derived)?;
        let mut tensors = Vec::with_capacity(self.tensors().len());
        // The model's weights: training tensors (optimizer slots) and per-rank state stay
        // in the shards, unless the whole of a one-process checkpoint is asked for.
        for (tensor, t) in self
            .tensors()
            .iter()
            .filter(|(n, _)| whole || !n.starts_with(store::TRAINING_PREFIX))
        {
            tensors.push(NamedTensor::new(
                tensor.clone(),
                Lazy {
                    checkpoint: self,
                    name: tensor,
                    dtype: self.dtype_of(tensor, t)?,
                    shape: &t.global_shape,
                },
            ));
        }
        let mut info = self.index.model_checkpoint.metadata.clone();
        let full = whole && info.contains_key(store::KEY_TRAINING_STATE);
        if !full {
            info.remove(store::KEY_TRAINING_STATE);
        }
        info.insert(
            store::gate::KEY_CONSOLIDATED_FROM.to_owned(),
            self.index.model_checkpoint.save_id.clone(),
        );
        store::save_to(
            storage,
            name,
            if full { Kind::Full } else { Kind::Weights },
            &tensors,
            &info,
            &SaveOptions::default(),
        )
    }
}

/// A global tensor read only when the writer asks for its bytes.
struct Lazy<'a> {
    checkpoint: &'a ShardedCheckpoint,
    name: &'a str,
    dtype: Dtype,
    shape: &'a [usize],
}

impl TensorData for Lazy<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> Cow<'_, [usize]> {
        Cow::Borrowed(self.shape)
    }
    fn write_to(&self, sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        let tensor = self
            .checkpoint
            .read(self.name)
            .map_err(std::io::Error::other)?;
        sink(tensor.data())
    }
}

/// The index `name` (a sharded checkpoint's `model.safetensors.index.json`), parsed and
/// checked.
///
/// # Errors
///
/// [`Error::Io`] (`NotFound`) when there is none; [`Error::Corrupt`] for a malformed index.
pub fn read_index(storage: &dyn Storage, name: &Name) -> Result<Index, Error> {
    Index::parse(name.as_str(), &read_small(storage, name, MAX_INDEX_BYTES)?)
}

/// The committed sharded (and deduplicated) checkpoints in the folders down to `depth`
/// levels below the first under `root`, from their indexes alone (the shards are not
/// opened): each folder, the bytes its files hold, and the metadata its index records
/// (full when it holds a training state). Indexes that do not parse are left out.
///
/// # Errors
///
/// The storage's errors while listing.
pub fn list_folders(
    storage: &dyn Storage,
    root: &Name,
    depth: usize,
) -> Result<Vec<crate::store::Listed>, Error> {
    let mut found = Vec::new();
    for object in storage.list(root, depth + 1)? {
        if object.name.file_name() != Some(INDEX_FILE) {
            continue;
        }
        let Ok(index) = read_index(storage, &object.name) else {
            continue;
        };
        let s = &index.model_checkpoint;
        let Ok(meta) = crate::store::Meta::from_info(&s.metadata) else {
            continue;
        };
        let kind = if s.metadata.contains_key(store::KEY_TRAINING_STATE) {
            Kind::Full
        } else {
            Kind::Weights
        };
        found.push(crate::store::Listed {
            path: object.name.parent(),
            // As if alone and plain: every file it names, compressed blobs at their plain size.
            size: s
                .shards
                .iter()
                .chain(s.blobs.iter().flatten())
                .map(|e| e.plain_bytes.unwrap_or(e.bytes))
                .fold(0u64, u64::saturating_add),
            header: Ok(crate::store::Header {
                kind,
                has_checksums: true,
                meta,
            }),
        });
    }
    Ok(found)
}

/// Whether `name` of `storage` is a folder checkpoint (sharded or deduplicated): a folder
/// holding its index. How every reader tells one from a checkpoint file.
///
/// # Errors
///
/// [`Error::Io`] when the storage cannot say.
pub fn is_folder_checkpoint(storage: &dyn Storage, name: &Name) -> Result<bool, Error> {
    storage.exists(&name.join(INDEX_FILE))
}

/// The newest committed sharded checkpoint among the sub-folders of `root`: by the epoch
/// and step in their indexes, then by name; folders without an index (interrupted saves)
/// and ones that do not open are skipped, the latter with a warning.
///
/// # Errors
///
/// [`Error::NoCheckpoint`] when there is none.
pub fn latest_sharded(storage: &dyn Storage, root: &Name) -> Result<Name, Error> {
    latest_sharded_matching(storage, root, 0, &|_, _| true)
}

/// Like [`latest_sharded`], among folders down to `depth` levels below the first and
/// whose folder and index `matching` accepts.
///
/// # Errors
///
/// [`Error::NoCheckpoint`] when there is none.
pub fn latest_sharded_matching(
    storage: &dyn Storage,
    root: &Name,
    depth: usize,
    matching: &dyn Fn(&Name, &Index) -> bool,
) -> Result<Name, Error> {
    newest_sharded(storage, root, depth, matching, Verify::HeaderOnly)
}

/// [`latest_sharded_matching`], each candidate opened and checked as `verify` says (every
/// byte, with [`Verify::Full`]: what one process resuming from it reads anyway; the ranks
/// of a sharded run each read only their own shard, and check headers only).
pub(crate) fn newest_sharded(
    storage: &dyn Storage,
    root: &Name,
    depth: usize,
    matching: &dyn Fn(&Name, &Index) -> bool,
    verify: Verify,
) -> Result<Name, Error> {
    // The indexes first (one read each), newest last; then opened (every shard's or blob's
    // header read) newest first, until one opens: opening all of them would read the
    // headers of every checkpoint in the folder, each blob as often as indexes name it.
    let mut found = indexed_folders(storage, root, depth, matching)?;
    while let Some((_, dir)) = found.pop() {
        let opened = ShardedCheckpoint::open(storage, &dir).and_then(|checkpoint| match verify {
            Verify::Full => checkpoint.verify(),
            _ => Ok(()),
        });
        match opened {
            Ok(()) => return Ok(dir),
            Err(e) if e.is_read_failure() => return Err(e),
            Err(e) => crate::store::warn_skipping(&dir, &e),
        }
    }
    Err(Error::NoCheckpoint { dir: root.clone() })
}

/// The folders among the sub-folders of `root` (down to `depth` levels below the first)
/// whose index reads and `matching` accepts, with the position in training their index
/// records, oldest first (by position, then name). An index that does not parse is passed
/// over with a warning.
///
/// # Errors
///
/// [`Error::Io`] when `root` cannot be listed or an index cannot be read: it may be the
/// newest.
pub(crate) fn indexed_folders(
    storage: &dyn Storage,
    root: &Name,
    depth: usize,
    matching: &dyn Fn(&Name, &Index) -> bool,
) -> Result<Vec<(crate::store::Position, Name)>, Error> {
    let listed = storage.list(root, depth + 1)?;
    // `save_last`'s `last/` before the save it stands for (see `store::sort_by_position`).
    let mut found: Vec<(crate::store::Position, bool, Name)> = Vec::new();
    for object in listed {
        if object.name.file_name() != Some(INDEX_FILE) {
            continue;
        }
        let dir = object.name.parent();
        match read_index(storage, &object.name) {
            Ok(index) if !matching(&dir, &index) => {}
            Ok(index) => {
                let position = crate::store::Meta::from_info(&index.model_checkpoint.metadata)
                    .map_or((0, 0, 0), |m| m.position());
                let own = !dir.file_name().is_some_and(crate::store::is_last_name);
                found.push((position, own, dir));
            }
            // One the storage fails to read may be the newest: nothing is taken (as for
            // single files, `store::latest_full`).
            Err(e) if e.is_read_failure() => return Err(e),
            Err(e) => crate::store::warn_skipping(&dir, &e),
        }
    }
    found.sort();
    Ok(found
        .into_iter()
        .map(|(position, _, dir)| (position, dir))
        .collect())
}
