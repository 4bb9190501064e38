//! Small files kept beside the checkpoints (the training history, the run's journal): read
//! whole with a size limit, rewritten whole and atomically (an object store cannot append).

use super::{Name, SaveOptions, Storage};
use crate::Error;

/// The largest side file read back (to be continued or reported): 256 MiB.
pub const MAX_SIDE_FILE_BYTES: u64 = 256 << 20;

/// The whole object `name`, `None` when there is none. `what` names it in the error
/// (`"an index"`).
///
/// # Errors
///
/// [`Error::TooLarge`] above `max` bytes; [`Error::Io`] when it cannot be read.
pub fn read_small(
    storage: &dyn Storage,
    name: &Name,
    max: u64,
    what: &str,
) -> Result<Option<Vec<u8>>, Error> {
    let reader = match storage.open(name) {
        Ok(reader) => reader,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    if reader.len() > max {
        return Err(Error::TooLarge {
            what: crate::text::shorten(name.as_str(), 200),
            reason: format!(
                "{} bytes, more than the {max} {what} may have",
                reader.len()
            ),
        });
    }
    let mut bytes = vec![0; reader.len() as usize];
    reader.read_exact_at(&mut bytes, 0).map_err(|e| Error::Io {
        action: "read",
        path: name.clone(),
        source: e,
    })?;
    Ok(Some(bytes))
}

/// Replaces the object `name` with `bytes`, atomically.
///
/// # Errors
///
/// [`Error::Io`] when it cannot be written.
pub fn write_whole(storage: &dyn Storage, name: &Name, bytes: &[u8]) -> Result<(), Error> {
    let mut pending = storage.create(name, 0, Default::default())?;
    std::io::Write::write_all(&mut pending, bytes).map_err(|e| Error::Io {
        action: "write",
        path: name.clone(),
        source: e,
    })?;
    pending.commit(&[], SaveOptions::default().durable)
}

/// A CSV field, quoted when it holds the separator, a quote or a line break.
pub fn csv_field(text: &str, separator: char) -> String {
    if text.contains([separator, '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}
