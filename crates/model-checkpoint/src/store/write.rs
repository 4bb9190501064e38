//! Writing a checkpoint: one pass over the tensors' bytes, checksums on the way, one sync.

use std::collections::BTreeMap;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::commit::PendingFile;
use super::layout::{self, crc_hex, Entry, Kind, PLACEHOLDER, RESERVED_KEYS};
use crate::model::NamedTensor;
use crate::Error;

/// How checkpoints are written (Keras's `options` argument takes this type).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SaveOptions {
    /// Sync the file and its folder before a save counts as done, so that it survives a
    /// power cut. Default: `true`.
    pub durable: bool,
}

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions { durable: true }
    }
}

impl SaveOptions {
    /// The defaults: durable saves.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`SaveOptions::durable`].
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }
}

/// What a save wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaveReport {
    /// The committed file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Time from the first byte written to the commit.
    pub elapsed: Duration,
}

/// Large tensors go straight to the file; small ones are gathered so that each write call
/// carries at least this much.
const WRITE_BUFFER: usize = 4 << 20;

/// Pieces at least this large are checksummed on another thread while being written.
const PARALLEL_CHECKSUM: usize = 2 << 20;

/// Writeback is started every time this much has been written.
const WRITEBACK_CHUNK: u64 = 8 << 20;

/// A file that asks the kernel to start writing every few MiB as they arrive, so that the
/// disk is busy during the whole save instead of only during the final sync.
struct StreamingFile<'a> {
    file: &'a mut std::fs::File,
    written: u64,
    kicked: u64,
}

impl Write for StreamingFile<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.kicked >= WRITEBACK_CHUNK {
            super::sys::start_writeback(self.file, self.kicked, self.written - self.kicked);
            self.kicked = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Writes `tensors` and `info` to `path` as one safetensors file, atomically.
///
/// Tensors are laid out as safetensors lays them out (by decreasing element size, then name),
/// so every tensor starts aligned to its element size. `info` becomes `__metadata__`
/// entries beside the format's own (see `docs/FORMAT.md`).
///
/// # Errors
///
/// [`Error::TensorName`] for a duplicate name or a key the format reserves,
/// [`Error::IsADirectory`] if `path` is a folder, [`Error::Io`] for any write failure (disk
/// full, permission denied), [`Error::TensorSize`] if a tensor hands over the wrong number of
/// bytes. On any error `path` is untouched and no temporary file is left.
///
/// # Durability
///
/// See [`PendingFile::commit`]: with `options.durable`, the file and its folder are synced.
pub fn save(
    path: &Path,
    kind: Kind,
    tensors: &[NamedTensor<'_>],
    info: &BTreeMap<String, String>,
    options: &SaveOptions,
) -> Result<SaveReport, Error> {
    let started = Instant::now();
    let mut info = info.clone();
    for key in RESERVED_KEYS {
        if info.contains_key(key) {
            return Err(Error::TensorName {
                name: key.to_owned(),
                reason: "the format reserves this metadata key",
            });
        }
    }
    info.insert(layout::KEY_FORMAT.into(), layout::FORMAT_NAME.into());
    info.insert(
        layout::KEY_VERSION.into(),
        layout::FORMAT_VERSION.to_string(),
    );
    info.insert(layout::KEY_KIND.into(), kind.as_str().into());
    info.insert(layout::KEY_ALGORITHM.into(), layout::ALGORITHM.into());

    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| {
        let (ta, tb) = (&tensors[a], &tensors[b]);
        tb.data
            .dtype()
            .bitsize()
            .cmp(&ta.data.dtype().bitsize())
            .then_with(|| ta.name.cmp(&tb.name))
    });
    let mut seen = std::collections::HashSet::with_capacity(tensors.len());
    let mut entries = Vec::with_capacity(tensors.len());
    let mut offset = 0usize;
    for &i in &order {
        let t = &tensors[i];
        if t.name == "__metadata__" {
            return Err(Error::TensorName {
                name: t.name.clone(),
                reason: "safetensors reserves this name",
            });
        }
        if !seen.insert(t.name.as_str()) {
            return Err(Error::TensorName {
                name: t.name.clone(),
                reason: "two tensors have this name",
            });
        }
        let len = t.data.byte_len();
        entries.push(Entry {
            name: t.name.clone(),
            dtype: t.data.dtype(),
            shape: t.data.shape().into_owned(),
            start: offset,
            end: offset + len,
        });
        offset += len;
    }

    let placeholders = vec![PLACEHOLDER.to_owned(); entries.len()];
    let draft = layout::header_text(&entries, &info, &placeholders, PLACEHOLDER);

    let mut pending = PendingFile::create(path)?;
    let temp_path = pending.temp_path().to_path_buf();
    let io = |e| Error::io("write", &temp_path, e);
    let mut sums = Vec::with_capacity(entries.len());
    {
        let file = StreamingFile {
            file: pending.file(),
            written: 0,
            kicked: 0,
        };
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
        out.write_all(&(draft.len() as u64).to_le_bytes())
            .map_err(io)?;
        out.write_all(draft.as_bytes()).map_err(io)?;
        for (&i, entry) in order.iter().zip(&entries) {
            let mut hasher = crc32fast::Hasher::new();
            let mut written = 0usize;
            tensors[i]
                .data
                .write_to(&mut |piece| {
                    written += piece.len();
                    if piece.len() < PARALLEL_CHECKSUM {
                        hasher.update(piece);
                        return out.write_all(piece);
                    }
                    // A large piece is checksummed on a second core while this one hands it
                    // to the kernel, so that the checksum costs no time.
                    std::thread::scope(|scope| {
                        let sum = scope.spawn(|| {
                            let mut h = crc32fast::Hasher::new();
                            h.update(piece);
                            h
                        });
                        let written = out.write_all(piece);
                        match sum.join() {
                            Ok(h) => hasher.combine(&h),
                            Err(_) => hasher.update(piece),
                        }
                        written
                    })
                })
                .map_err(io)?;
            if written != entry.end - entry.start {
                return Err(Error::TensorSize {
                    dtype: entry.dtype,
                    shape: entry.shape.clone(),
                    expected: entry.end - entry.start,
                    actual: written,
                });
            }
            sums.push(crc_hex(hasher.finalize()));
        }
        out.flush().map_err(io)?;
    }

    // Patch the checksums into the header: same structure, same widths, same length.
    let without_header_sum = layout::header_text(&entries, &info, &sums, PLACEHOLDER);
    debug_assert_eq!(without_header_sum.len(), draft.len());
    let range = layout::header_sum_range(without_header_sum.as_bytes())
        .expect("the header holds exactly one header checksum, written just above");
    let header_sum = layout::header_checksum(without_header_sum.as_bytes(), range.clone());
    let mut header = without_header_sum.into_bytes();
    header[range].copy_from_slice(crc_hex(header_sum).as_bytes());
    let file = pending.file();
    file.seek(SeekFrom::Start(8)).map_err(io)?;
    file.write_all(&header).map_err(io)?;

    let bytes = 8 + header.len() as u64 + offset as u64;
    let path = pending.commit(options.durable)?;
    Ok(SaveReport {
        path,
        bytes,
        elapsed: started.elapsed(),
    })
}
