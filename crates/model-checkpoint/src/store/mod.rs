//! Checkpoint files: a streaming safetensors writer with per-tensor checksums, an atomic and
//! durable commit, and a verifying reader. Nothing here knows about Keras.
//!
//! Every file is a plain safetensors file that Python's `safetensors.safe_open` reads. The
//! layout of its `__metadata__` is in `docs/FORMAT.md`.
//!
//! # Durability
//!
//! A save writes a temporary file beside the destination, syncs it, renames it over the
//! destination and syncs the folder. A crash at any point leaves the destination holding
//! either the previous complete file or the new complete file, never a torn one; at worst a
//! temporary file (`.NAME.RANDOM.ckpt-tmp`) is left, which [`remove_stale_temp_files`]
//! recognises and removes.

mod commit;
mod layout;
mod lock;
mod meta;
mod read;
mod scan;
mod sys;
mod write;

pub(crate) use commit::parent_dir;
pub use commit::{
    is_temp_file, remove_stale_temp_files, replace_with_link, CommitError, PendingFile, TEMP_SUFFIX,
};
pub use layout::{Kind, FORMAT_NAME, FORMAT_VERSION, TRAINING_PREFIX};
pub use lock::{FolderLock, LOCK_FILE};
pub use meta::{Meta, KEY_TRAINING_STATE, MAX_COUNTER};
pub use read::{CheckpointFile, TensorRef, Verify};
pub use scan::{candidate_files, latest_full, list, Header, Listed};
pub(crate) use scan::{candidates_in, list_files, sort_by_position};
pub use sys::open_regular;
pub use write::{save, SaveOptions, SaveReport};
