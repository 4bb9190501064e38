//! The names the store itself gives: the save on a signal's file, and the canonical
//! spelling of a text (see [`Name`]).

use crate::name::Name;

/// `name` normalised as a [`Name`] (the text unchanged when it is not a valid name, which
/// the storage then refuses): for callers that hold a `&str` and want its canonical
/// spelling.
///
/// ```
/// use model_checkpoint::store::normalize;
/// assert_eq!(normalize("ck/sub/../w.safetensors"), "ck/w.safetensors");
/// assert_eq!(normalize("s3://bucket/run/../w"), "s3://bucket/w");
/// ```
pub fn normalize(name: &str) -> String {
    match Name::new(name) {
        Ok(n) => n.as_str().to_owned(),
        Err(_) => name.to_owned(),
    }
}

/// Where `ModelCheckpoint` saves on a signal (`save_on_interrupt`), in the template's folder,
/// when the name is free.
pub const INTERRUPT_FILE: &str = "interrupted.safetensors";

/// Where `ModelCheckpoint::save_last` keeps its copy of the newest save, in the template's
/// folder.
pub const LAST_FILE: &str = "last.safetensors";

/// Where a deduplicated or sharded run's `save_last` keeps its index of the newest save, in
/// the template's folder.
pub const LAST_DIR: &str = "last";

/// Whether `file` (a file or folder name) is one `save_last` keeps the newest save under
/// ([`LAST_FILE`], [`LAST_DIR`]): it ties with that save in training order, and gives way
/// to it, whose name stays when `last` moves on.
pub fn is_last_name(file: &str) -> bool {
    file == LAST_FILE || file == LAST_DIR
}

/// Whether `file` (a file name) is one a save on a signal takes: [`INTERRUPT_FILE`], or
/// `interrupted-RUNID.safetensors` when another run's file holds that name.
pub fn is_interrupt_name(file: &str) -> bool {
    file == INTERRUPT_FILE
        || file
            .strip_prefix("interrupted-")
            .and_then(|f| f.strip_suffix(".safetensors"))
            .is_some_and(|id| {
                (1..=64).contains(&id.len())
                    && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            })
}
