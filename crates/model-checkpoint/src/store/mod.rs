//! Checkpoint files: a streaming safetensors writer with per-tensor checksums, an atomic and
//! durable commit, and a verifying reader. Nothing here knows about Keras.
//!
//! Every file is a plain safetensors file that Python's `safetensors.safe_open` reads. The
//! layout of its `__metadata__` is in `docs/FORMAT.md`.
//!
//! # Durability
//!
//! Where checkpoints live is a [`Storage`]; [`LocalFolder`] is the local file system, and
//! the only code in this crate that touches it. A local save writes a temporary file beside
//! the destination, syncs it, renames it over the destination and syncs the folder. A crash at any point leaves the destination holding
//! either the previous complete file or the new complete file, never a torn one; at worst a
//! temporary file (`.NAME.RANDOM.ckpt-tmp`) is left, which [`remove_stale_temp_files`]
//! recognises and removes.

mod export;
pub mod gate;
mod layout;
mod local;
mod meta;
mod name;
mod read;
mod scan;
mod side_file;
mod storage;
mod write;

pub use crate::document::{DocumentError, LoopState, TrainingDocument, OPTIMIZER_TENSORS};
pub use crate::name::{Name, NameError};
pub use export::{export, Export, Exported};
pub use gate::KEY_EXPORTED_FROM;
pub(crate) use layout::crc_hex;
pub use layout::{Kind, FORMAT_NAME, FORMAT_VERSION, RESERVED_KEYS, TRAINING_PREFIX};
pub use local::{
    is_temp_file, open_regular, remove_stale_temp_files, replace_with_link, CommitError,
    FolderLock, LocalFolder, PendingFile, LOCK_FILE, TEMP_SUFFIX,
};
pub(crate) use meta::KEY_RUN_ID;
pub use meta::{Meta, Position, RawMeta, KEY_TRAINING_STATE, MAX_COUNTER};
pub use name::{is_interrupt_name, is_last_name, normalize, INTERRUPT_FILE, LAST_DIR, LAST_FILE};
pub use read::{CheckpointFile, TensorReader, TensorRef, Verify, MAX_DIMS, MAX_HEADER_BYTES};
pub use scan::{
    candidate_files, latest_full, latest_full_in, latest_full_matching, list, list_in,
    sort_by_position, Header, Listed,
};
pub(crate) use scan::{newest_verified_in, warn_resuming, warn_skipping};
pub use side_file::{csv_field, read_small, write_whole, SideWriter, MAX_SIDE_FILE_BYTES};
pub use storage::{
    Commit, ObjectMeta, ObjectReader, PendingObject, Storage, HISTORY_FILE, JOURNAL_FILE,
    MARKER_PREFIX,
};
pub use write::{save, save_by_content, save_to, ContentName, SaveOptions, SaveReport};
