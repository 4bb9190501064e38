//! Sharded checkpoints: one checkpoint saved by many processes, loaded by any number.
//!
//! A sharded checkpoint is a folder (or prefix) of per-rank shard files, each a plain,
//! verified file of this project's format (`shard-00001-of-00004.safetensors`), and an index
//! written last by rank 0, `model.safetensors.index.json` (see `docs/FORMAT.md`). A
//! replicated tensor is written once, by the rank [`owners`] picks the same way on every
//! rank; a sliced tensor records its global shape and its slice's offsets. The commit needs
//! no coordinator service: ranks write their shards, and rank 0 creates the index with
//! a create-if-absent (whole and durable) once every shard of this save is there and verifies ([`commit`]), through
//! [`crate::store::Storage`], so a shared folder and a bucket work alike.
//!
//! - `ranks.rs`: which process this is (torchrun, SLURM, OpenMPI, or explicit).
//! - `index.rs`: the index, its checks, and the geometry of pieces.
//! - `save.rs`: a rank's shard, the owners of replicated tensors, the commit.
//! - `load.rs`: opening, assembling a tensor or a rank's box of it, consolidating, latest.
//! - `blobs.rs`: deduplicated checkpoints, whose index names content-addressed blobs
//!   shared between checkpoints instead of shards, and the collection of unnamed blobs.
//! - `codec.rs`: a blob's tensor compressed (byte planes, then zstd), and decoded.

pub mod blobs;
pub mod codec;
mod index;
mod load;
mod ranks;
mod save;

pub use index::{
    is_shard_file, shard_file, GlobalTensor, Index, Piece, ShardEntry, Sharded, Slice,
    DEDUP_FORMAT_VERSION, INDEX_FILE, MAX_INDEX_BYTES,
};
pub(crate) use load::{indexed_folders, newest_sharded};
pub use load::{
    is_folder_checkpoint, latest_sharded, latest_sharded_matching, list_folders, read_index,
    ShardedCheckpoint,
};
pub use ranks::{Ranks, MAX_WORLD_SIZE};

pub use save::{
    commit, gather, owners, replicated_digest, save_shard, wait_for_index, Barrier, CommitOptions,
    PendingIndex, ShardTensor, KEY_SHARD,
};
pub(crate) use save::{resumed_from, save_shard_checked};
