//! Saving a sharded checkpoint: each rank writes its shard (a plain, verified file of this
//! project's format) into the checkpoint's folder; then the coordinator (rank 0) waits until
//! every shard of this save is there and its header verifies, and creates the index with
//! a create-if-absent, whole and durable. No index, no checkpoint: a rank that dies before its shard, or the
//! coordinator before the index, leaves a folder that readers treat as an interrupted save.
//! All of it goes through [`Storage`], so a shared folder and a bucket work alike.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::index::{
    shard_file, GlobalTensor, Index, Piece, ShardEntry, Sharded, Slice, INDEX_FILE,
    SHARDED_FORMAT_VERSION,
};
use super::ranks::Ranks;
use crate::model::{NamedTensor, Placement};
use crate::store::{self, CheckpointFile, Kind, Name, SaveOptions, SaveReport, Storage, Verify};
use crate::Error;

/// The metadata key of a shard's own description (rank, world size, save id, slices).
pub const KEY_SHARD: &str = "shard";

/// One tensor a rank saves: a replicated tensor this rank owns (see [`owners`]), a slice of
/// a larger one, or this rank's own state.
pub struct ShardTensor<'a> {
    /// The tensor (its name is the global tensor's name).
    pub tensor: NamedTensor<'a>,
    /// How it relates to the global model.
    pub placement: Placement,
}

/// What a shard says about itself (in its metadata under [`KEY_SHARD`]).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ShardInfo {
    pub rank: usize,
    pub world_size: usize,
    pub save_id: String,
    #[serde(default)]
    pub slices: BTreeMap<String, Slice>,
    /// The names of this rank's own state (not parts of global tensors).
    #[serde(default)]
    pub per_rank: Vec<String>,
    /// SHA-256 of the replicated tensors' names and sizes as this rank saw them: ranks that
    /// disagree would pick different owners, and the coordinator refuses to commit.
    #[serde(default)]
    pub replicated: String,
    /// A deduplicated checkpoint's head: [`tensors_digest`] of the index it was saved with,
    /// so that an index that lost a tensor from both its lists does not open (every file
    /// it still names would verify). Empty elsewhere, and in heads written before it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tensors: String,
}

/// A short SHA-256 of an index's tensors: each name with the files of its pieces, without
/// the `../` before the blob folder, so that the index of `last/`, which names the same
/// blobs from another depth (`blobs::relocate`), gives the same digest.
pub(crate) fn tensors_digest(tensors: &BTreeMap<String, super::GlobalTensor>) -> String {
    fn below(mut file: &str) -> &str {
        while let Some(rest) = file.strip_prefix("../") {
            file = rest;
        }
        file
    }
    let listed: Vec<(&str, Vec<&str>)> = tensors
        .iter()
        .map(|(name, t)| {
            (
                name.as_str(),
                t.pieces.iter().map(|p| below(&p.file)).collect(),
            )
        })
        .collect();
    // A list of strings always serializes.
    digest(&serde_json::to_string(&listed).unwrap_or_default())
}

/// How a save after a resume from `file` (a shard) names the checkpoint it resumed from: a
/// short digest of that checkpoint's save id. `None` for a file that is not a shard.
pub(crate) fn resumed_from(file: &CheckpointFile) -> Option<String> {
    let text = file.info().get(KEY_SHARD)?;
    let info: ShardInfo = serde_json::from_str(text).ok()?;
    Some(digest(&info.save_id))
}

/// A short SHA-256 (hex) of `text`.
pub(crate) fn digest(text: &str) -> String {
    use sha2::Digest;
    crate::text::hex(&sha2::Sha256::digest(text.as_bytes())[..16])
}

/// The digest every rank computes of the replicated tensors (names and sizes) it saves
/// from: equal on every rank exactly when their owners agree.
pub fn replicated_digest(sizes: &[(&str, usize)]) -> String {
    let mut sorted: Vec<String> = sizes.iter().map(|(n, b)| format!("{n}\u{0}{b}")).collect();
    sorted.sort();
    digest(&sorted.join("\n"))
}

/// Which rank writes each replicated tensor, computed the same way on every rank without
/// talking: in name order, each tensor goes to the rank with the fewest bytes so far (ties to
/// the lowest rank), as PyTorch DCP balances. `sizes` are (name, bytes); returns the rank of
/// each, in the order given.
pub fn owners(sizes: &[(&str, usize)], world_size: usize) -> Vec<usize> {
    let world = world_size.max(1);
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| sizes[a].0.cmp(sizes[b].0));
    let mut load = vec![0usize; world];
    let mut owner = vec![0usize; sizes.len()];
    for i in order {
        let rank = (0..world).min_by_key(|&r| (load[r], r)).unwrap_or(0);
        load[rank] = load[rank].saturating_add(sizes[i].1);
        owner[i] = rank;
    }
    owner
}

/// Writes this rank's shard of the save `save_id` into folder `dir` of `storage` (making
/// the folder), with `info` as extra metadata; returns what was written. Per-rank state
/// (a generator, a data cursor) goes in `tensors` or `info` like any other.
///
/// # Errors
///
/// A slice whose shape does not fit its global shape; the store's errors.
pub fn save_shard(
    storage: &dyn Storage,
    dir: &Name,
    ranks: Ranks,
    save_id: &str,
    kind: Kind,
    tensors: Vec<ShardTensor<'_>>,
    info: &BTreeMap<String, String>,
) -> Result<SaveReport, Error> {
    save_shard_checked(
        storage,
        dir,
        ranks,
        save_id,
        kind,
        tensors,
        info,
        String::new(),
    )
}

/// [`save_shard`], recording `replicated` ([`replicated_digest`]) for the coordinator to
/// compare across ranks.
#[allow(clippy::too_many_arguments)]
pub(crate) fn save_shard_checked(
    storage: &dyn Storage,
    dir: &Name,
    ranks: Ranks,
    save_id: &str,
    kind: Kind,
    tensors: Vec<ShardTensor<'_>>,
    info: &BTreeMap<String, String>,
    replicated: String,
) -> Result<SaveReport, Error> {
    let mut slices = BTreeMap::new();
    let mut per_rank = Vec::new();
    for t in &tensors {
        if t.placement == Placement::PerRank {
            per_rank.push(t.tensor.name.clone());
        }
        if let Placement::Sliced(slice) = &t.placement {
            let shape = t.tensor.data.shape();
            let fits = slice.global_shape.len() == shape.len()
                && slice.offsets.len() == shape.len()
                && (0..shape.len()).all(|d| {
                    slice.offsets[d]
                        .checked_add(shape[d])
                        .is_some_and(|end| end <= slice.global_shape[d])
                });
            if !fits {
                return Err(Error::TensorName {
                    name: t.tensor.name.clone(),
                    reason: "its slice does not fit inside its global shape",
                });
            }
            slices.insert(t.tensor.name.clone(), slice.clone());
        }
    }
    let shard = ShardInfo {
        rank: ranks.rank,
        world_size: ranks.world_size,
        save_id: save_id.to_owned(),
        slices,
        per_rank,
        replicated,
        tensors: String::new(),
    };
    let mut info = info.clone();
    info.insert(
        KEY_SHARD.to_owned(),
        serde_json::to_string(&shard).map_err(|e| Error::Corrupt {
            path: dir.clone(),
            reason: format!("the shard description cannot be written: {e}"),
        })?,
    );
    storage.prepare_dir(dir)?;
    let named: Vec<NamedTensor<'_>> = tensors.into_iter().map(|t| t.tensor).collect();
    store::save_to(
        storage,
        &dir.join(&shard_file(ranks.rank, ranks.world_size)),
        kind,
        &named,
        &info,
        &SaveOptions::default(),
    )
}

/// Opens the shard of `rank` in `dir` and checks that it belongs to the save `save_id`.
pub(crate) fn open_shard(
    storage: &dyn Storage,
    dir: &Name,
    rank: usize,
    world_size: usize,
    save_id: Option<&str>,
) -> Result<(CheckpointFile, ShardInfo), Error> {
    open_shard_named(
        storage,
        &dir.join(&shard_file(rank, world_size)),
        rank,
        world_size,
        save_id,
    )
}

/// [`open_shard`], of the shard `name` (a deduplicated checkpoint's head is a blob).
pub(crate) fn open_shard_named(
    storage: &dyn Storage,
    name: &Name,
    rank: usize,
    world_size: usize,
    save_id: Option<&str>,
) -> Result<(CheckpointFile, ShardInfo), Error> {
    let name = name.clone();
    let file = CheckpointFile::open_in(storage, &name, Verify::HeaderOnly)?;
    let bad = |reason: String| Error::Corrupt {
        path: name.clone(),
        reason,
    };
    let text = file
        .info()
        .get(KEY_SHARD)
        .ok_or_else(|| bad("it is not a shard: no shard description".to_owned()))?;
    let info: ShardInfo = serde_json::from_str(text)
        .map_err(|e| bad(format!("its shard description is malformed: {e}")))?;
    if info.rank != rank || info.world_size != world_size {
        return Err(bad(format!(
            "it says it is rank {} of {}",
            info.rank, info.world_size
        )));
    }
    if save_id.is_some_and(|id| id != info.save_id) {
        return Err(bad("it belongs to another save".to_owned()));
    }
    Ok((file, info))
}

/// A collective the ranks already have (MPI, NCCL, a job scheduler's), which sharded saves
/// use instead of polling the storage: every rank calls [`Barrier::wait`] with the same
/// name, and it returns once all have, or fails after `timeout` (timeouts are explicit; a
/// barrier that cannot tell should wait at most that long).
///
/// With background saves it is called on each rank's writer thread, while training goes on
/// (and runs its own collectives) on the main one: give it a communicator of its own (MPI
/// needs `MPI_THREAD_MULTIPLE`, or a duplicated communicator used only here), or a
/// store-based barrier keyed by the name.
pub trait Barrier: Send + Sync {
    /// Returns once every rank has called `wait` with `name`.
    ///
    /// # Errors
    ///
    /// When the ranks did not all arrive within `timeout`.
    fn wait(&self, name: &str, timeout: Duration) -> Result<(), Error>;
}

/// How long the coordinator waits for the shards, and how often it looks.
#[derive(Clone, Copy, Debug)]
pub struct CommitOptions {
    /// Give up after this long (an error; no index is written).
    pub timeout: Duration,
    /// The first pause between looks; it doubles up to a second.
    pub poll: Duration,
}

impl Default for CommitOptions {
    fn default() -> Self {
        CommitOptions {
            timeout: Duration::from_secs(600),
            poll: Duration::from_millis(10),
        }
    }
}

/// The coordinator's half of a save: [`gather`], then [`PendingIndex::publish`]. Only
/// rank 0 calls it. Returns the index.
///
/// # Errors
///
/// As [`gather`] and [`PendingIndex::publish`].
pub fn commit(
    storage: &dyn Storage,
    dir: &Name,
    world_size: usize,
    save_id: &str,
    metadata: &BTreeMap<String, String>,
    options: CommitOptions,
) -> Result<Index, Error> {
    gather(storage, dir, world_size, save_id, metadata, options)?.publish(storage)
}

/// An index ready to be published: every shard was found and verified.
#[derive(Debug)]
pub struct PendingIndex {
    name: Name,
    text: Vec<u8>,
    index: Index,
}

impl PendingIndex {
    /// Creates the index if the folder has none: from now on the checkpoint exists.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyExists`] when the folder already has an index (another coordinator
    /// won); the storage's errors.
    pub fn publish(self, storage: &dyn Storage) -> Result<Index, Error> {
        // Whole or not at all, and durable: the index is the commit. (`put_if_absent`, made
        // for markers, creates the name before its bytes are written: a kill between the two
        // left an empty index, a committed checkpoint that does not open.)
        let mut pending = storage.create(&self.name, 0, store::Commit::CreateNew)?;
        std::io::Write::write_all(&mut pending, &self.text).map_err(|e| Error::Io {
            action: "write",
            path: self.name.clone(),
            source: e,
        })?;
        pending.commit(&[], true)?;
        Ok(self.index)
    }
}

/// How many shards' headers a commit waits for and reads at once: on object storage each is
/// a round trip or two, which one after another made the commit linear in the ranks.
const HEADERS_IN_FLIGHT: usize = 16;

/// What the commit needs of a shard's header (the file itself is closed: a commit of
/// thousands of ranks holds no file open).
struct ShardHead {
    tensors: Vec<StoredTensor>,
    len: u64,
    digest: [u8; 32],
    info: ShardInfo,
}

/// A tensor as a shard's header describes it.
struct StoredTensor {
    name: String,
    dtype: crate::model::Dtype,
    shape: Vec<usize>,
    len: usize,
}

/// Waits for every rank's shard of `save_id` in `dir` and reads its header,
/// [`HEADERS_IN_FLIGHT`] at a time, each polled with backoff until the timeout; the heads in
/// rank order, or the first failure in rank order.
fn wait_for_shards(
    storage: &dyn Storage,
    dir: &Name,
    world_size: usize,
    save_id: &str,
    options: CommitOptions,
) -> Result<Vec<ShardHead>, Error> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Mutex, PoisonError};
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let slots: Vec<Mutex<Option<Result<ShardHead, Error>>>> =
        (0..world_size).map(|_| Mutex::new(None)).collect();
    let wait_for = |rank: usize| -> Result<ShardHead, Error> {
        let mut pause = options.poll;
        loop {
            match open_shard(storage, dir, rank, world_size, Some(save_id)) {
                Ok((file, info)) => {
                    return Ok(ShardHead {
                        tensors: file
                            .tensors()
                            .map(|t| StoredTensor {
                                name: t.name.to_owned(),
                                dtype: t.dtype,
                                shape: t.shape.to_vec(),
                                len: t.len,
                            })
                            .collect(),
                        len: file.len(),
                        digest: file.header_digest(),
                        info,
                    })
                }
                // Not there yet, or still another save's (being replaced): look again,
                // unless another rank's wait has failed already.
                Err(e)
                    if started.elapsed() < options.timeout && !failed.load(Ordering::Relaxed) =>
                {
                    log::debug!(target: "model_checkpoint", "waiting for shard {rank}: {e}");
                    std::thread::sleep(pause);
                    pause = (pause * 2).clamp(Duration::from_millis(1), Duration::from_secs(1));
                }
                Err(e) => {
                    return Err(Error::Io {
                        action: "wait for the shards of",
                        path: dir.clone(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!(
                                "shard {rank} of {world_size} is not there after {:?}: {e}",
                                options.timeout
                            ),
                        ),
                    })
                }
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..HEADERS_IN_FLIGHT.min(world_size) {
            scope.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let rank = next.fetch_add(1, Ordering::Relaxed);
                    let Some(slot) = slots.get(rank) else {
                        return;
                    };
                    let result = wait_for(rank);
                    if result.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
                }
            });
        }
    });
    let results: Vec<Option<Result<ShardHead, Error>>> = slots
        .into_iter()
        .map(|s| s.into_inner().unwrap_or_else(PoisonError::into_inner))
        .collect();
    // The first failure in rank order; ranks left unread (after a failure) come after it.
    let mut heads = Vec::with_capacity(world_size);
    let mut unread = None;
    for (rank, result) in results.into_iter().enumerate() {
        match result {
            Some(Ok(head)) => heads.push(head),
            Some(Err(e)) => return Err(e),
            None => {
                unread.get_or_insert(rank);
            }
        }
    }
    match unread {
        None => Ok(heads),
        Some(rank) => Err(Error::Corrupt {
            path: dir.join(&shard_file(rank, world_size)),
            reason: "its header was never read".to_owned(),
        }),
    }
}

/// Waits until every rank's shard of `save_id` is in `dir` and its header verifies, and
/// makes the index (with `metadata` in this project's section: epoch, step, the global
/// training state), checked as a reader will check it.
///
/// # Errors
///
/// A timeout ([`Error::Io`], `TimedOut`) naming the shard still missing; a shard of another
/// world size ([`Error::Corrupt`]).
pub fn gather(
    storage: &dyn Storage,
    dir: &Name,
    world_size: usize,
    save_id: &str,
    metadata: &BTreeMap<String, String>,
    options: CommitOptions,
) -> Result<PendingIndex, Error> {
    let heads = wait_for_shards(storage, dir, world_size, save_id, options)?;
    let mut shards = Vec::with_capacity(world_size);
    let mut tensors: BTreeMap<String, GlobalTensor> = BTreeMap::new();
    let mut weight_map = BTreeMap::new();
    let mut total = 0u64;
    let mut replicated: Option<String> = None;
    for (rank, head) in heads.into_iter().enumerate() {
        let ShardHead {
            tensors: stored,
            len,
            digest,
            info,
        } = head;
        let file_name = shard_file(rank, world_size);
        let bad = |reason: String| Error::Corrupt {
            path: dir.join(&file_name),
            reason,
        };
        match &replicated {
            None => replicated = Some(info.replicated.clone()),
            Some(first) if *first != info.replicated => {
                return Err(bad(
                    "its rank saw other replicated tensors than rank 0 (their names or sizes differ): the ranks' shard layouts disagree".to_owned(),
                ))
            }
            Some(_) => {}
        }
        // From another rank's header (untrusted, and long in a large model): looked up, not
        // searched, for each of its tensors.
        let per_rank: std::collections::HashSet<&str> =
            info.per_rank.iter().map(String::as_str).collect();
        for t in &stored {
            if per_rank.contains(t.name.as_str()) {
                // Read from its rank's shard on resume; not a part of the global model.
                continue;
            }
            total = total.saturating_add(t.len as u64);
            let (offsets, global_shape) = match info.slices.get(&t.name) {
                Some(s) => (s.offsets.clone(), s.global_shape.clone()),
                None => (vec![0; t.shape.len()], t.shape.clone()),
            };
            let entry = tensors
                .entry(t.name.clone())
                .or_insert_with(|| GlobalTensor {
                    dtype: format!("{:?}", t.dtype),
                    global_shape: global_shape.clone(),
                    pieces: Vec::new(),
                });
            if entry.dtype != format!("{:?}", t.dtype) || entry.global_shape != global_shape {
                return Err(bad(format!(
                    "tensor {:?} has another dtype or global shape than in the shards before",
                    crate::text::shorten(&t.name, 100)
                )));
            }
            entry.pieces.push(Piece {
                file: file_name.clone(),
                offsets: offsets.clone(),
                shape: t.shape.clone(),
            });
            if offsets.iter().all(|&o| o == 0) {
                weight_map.insert(t.name.clone(), file_name.clone());
            }
        }
        let digest = crate::text::hex(&digest);
        shards.push(ShardEntry {
            file: file_name,
            bytes: len,
            header_sha256: digest,
            plain_bytes: None,
        });
    }
    let index = Index {
        metadata: BTreeMap::from([("total_size".to_owned(), serde_json::json!(total))]),
        weight_map,
        model_checkpoint: Sharded {
            format_version: SHARDED_FORMAT_VERSION,
            world_size,
            save_id: save_id.to_owned(),
            shards,
            blobs: None,
            tensors,
            metadata: metadata.clone(),
        },
    };
    PendingIndex::checked(dir.join(INDEX_FILE), index)
}

impl PendingIndex {
    /// `index`, to be published as `name`: written out, and checked as a reader will check
    /// it (pieces that do not tile a tensor are an error now, not at the first load).
    pub(crate) fn checked(name: Name, index: Index) -> Result<PendingIndex, Error> {
        let text = serde_json::to_vec(&index).map_err(|e| Error::Corrupt {
            path: name.clone(),
            reason: format!("the index cannot be written: {e}"),
        })?;
        if text.len() as u64 > super::index::MAX_INDEX_BYTES {
            return Err(Error::TooLarge {
                what: crate::text::shorten(name.as_str(), 200),
                reason: format!(
                    "{} bytes, more than the {} a reader takes: save fewer, larger tensors",
                    text.len(),
                    super::index::MAX_INDEX_BYTES
                ),
            });
        }
        Index::parse(name.as_str(), &text)?;
        Ok(PendingIndex { name, text, index })
    }

    /// Replaces whatever index is there with this one, atomically (a deduplicated
    /// checkpoint saved again under its name, as Keras overwrites a file): readers see the
    /// old checkpoint or the new one, both whole, since blobs are never rewritten.
    ///
    /// # Errors
    ///
    /// The storage's errors.
    pub(crate) fn publish_replacing(self, storage: &dyn Storage) -> Result<Index, Error> {
        store::write_whole(storage, &self.name, &self.text)?;
        Ok(self.index)
    }
}

/// Waits until folder `dir` has its index (what ranks other than 0 do before they go on),
/// up to `timeout`; returns whether it appeared.
///
/// # Errors
///
/// The storage's errors.
pub fn wait_for_index(storage: &dyn Storage, dir: &Name, timeout: Duration) -> Result<bool, Error> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(10);
    let name = dir.join(INDEX_FILE);
    loop {
        if storage.exists(&name)? {
            return Ok(true);
        }
        if started.elapsed() >= timeout {
            return Ok(false);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}
