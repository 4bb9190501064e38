//! Reading a checkpoint with positioned reads, and verifying it.
//!
//! A checkpoint is untrusted input: another process may truncate or rewrite it while it is
//! read, and it may not be a regular file at all. So nothing here maps the file into memory
//! (a mapping turns a concurrent truncation into SIGBUS); every byte is read with `pread`,
//! a short read is an error naming the file, and every tensor's checksum is checked again on
//! the bytes actually handed out, so that a file rewritten since it was opened is caught too.
//! Memory stays bounded: verification streams the file in chunks, and a tensor is held in
//! memory only when the caller asks for it.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use super::Name;

use super::layout::{self, Kind};
use super::local::LocalFolder;
use super::storage::{ObjectReader, Storage};
use crate::model::{Dtype, TensorData};
use crate::Error;

/// Whether [`CheckpointFile::open`] checks tensor checksums.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Verify {
    /// Check the header and every tensor (the default).
    #[default]
    Full,
    /// Check the header only, skipping the pass over the tensor bytes (each tensor is still
    /// checked when it is read).
    HeaderOnly,
}

/// The largest header this reader accepts, as the `safetensors` crate limits it.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Whether `prefix`, a file's first 9 bytes, begins as a safetensors file does: a header
/// length within [`MAX_HEADER_BYTES`], then the header's `{`.
pub(crate) fn begins_as_safetensors(prefix: &[u8; 9]) -> bool {
    let mut len = [0u8; 8];
    len.copy_from_slice(&prefix[..8]);
    u64::from_le_bytes(len) <= MAX_HEADER_BYTES && prefix[8] == b'{'
}

/// The most dimensions a tensor may have (numpy's limit): a copy of a box of a tensor
/// steps through every dimension for each row it copies.
pub const MAX_DIMS: usize = 64;

/// How much verification reads at a time.
const CHUNK: usize = 8 << 20;
/// Tensors from this size on are read whole by the backend, which computes their checksum
/// as the bytes arrive ([`ObjectReader::read_with_crc_at`], from [`CheckpointFile::read`]).
const PARALLEL_READ: usize = 4 << 20;

/// One tensor's entry: name, dtype, shape and byte range within the data section.
struct Stored {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    range: std::ops::Range<u64>,
}

/// An open checkpoint file.
///
/// Files written by other tools (plain safetensors from Python, PyTorch or numpy) open too:
/// they count as weights-only and carry no checksums, which [`CheckpointFile::has_checksums`]
/// tells. A file that declares this project's format, or carries any of its checksum keys,
/// is held to all of them.
pub struct CheckpointFile {
    path: Name,
    file: Box<dyn ObjectReader>,
    len: u64,
    data_start: u64,
    info: BTreeMap<String, String>,
    kind: Kind,
    sums: Option<BTreeMap<String, u32>>,
    /// In file order.
    tensors: Vec<Stored>,
    /// Index into `tensors` by name.
    by_name: std::collections::HashMap<String, usize>,
    /// SHA-256 of the length prefix and the header.
    header_digest: [u8; 32],
}

/// A tensor's entry in an open [`CheckpointFile`]; read its bytes with
/// [`CheckpointFile::read`].
#[derive(Clone, Copy, Debug)]
pub struct TensorRef<'a> {
    /// The name.
    pub name: &'a str,
    /// The element type.
    pub dtype: Dtype,
    /// The shape.
    pub shape: &'a [usize],
    /// The size of its bytes.
    pub len: usize,
    /// The stored checksum, if the file has them.
    pub checksum: Option<u32>,
    index: usize,
}

impl CheckpointFile {
    /// Opens and checks `path`: a regular file, the safetensors structure, the format
    /// version, the header checksum and, with [`Verify::Full`], every tensor's checksum.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be read, [`Error::NotARegularFile`] for a FIFO,
    /// socket or device (refused without blocking), [`Error::FolderNotFile`] for a folder;
    /// [`Error::Corrupt`] naming what is wrong for a truncated file, a damaged header, an
    /// unsupported format version, or a tensor whose bytes do not match their checksum.
    pub fn open(path: &Path, verify: Verify) -> Result<Self, Error> {
        // Resolved as a save resolves it: `ck/new/../w` is `ck/w` whether or not `ck/new`
        // exists.
        let resolved = super::local::lexical(path);
        Self::from_reader(
            &Name::from(path),
            Box::new(LocalFolder::open_at(&resolved)?),
            verify,
        )
    }

    /// Like [`CheckpointFile::open`], for the object `name` of `storage`.
    ///
    /// # Errors
    ///
    /// As [`CheckpointFile::open`], with the backend's errors.
    pub fn open_in(storage: &dyn Storage, name: &Name, verify: Verify) -> Result<Self, Error> {
        Self::from_reader(name, storage.open(name)?, verify)
    }

    fn from_reader(
        path: &Name,
        file: Box<dyn ObjectReader>,
        verify: Verify,
    ) -> Result<Self, Error> {
        let len = file.len();
        let corrupt = |reason: String| Error::corrupt(path, reason);
        if len < 8 {
            return Err(corrupt(format!(
                "truncated file ({len} bytes): too short for a safetensors header"
            )));
        }
        let mut prefix = [0u8; 8];
        read_exact_at(file.as_ref(), &mut prefix, 0, path)?;
        let header_len = u64::from_le_bytes(prefix);
        if header_len > MAX_HEADER_BYTES {
            return Err(corrupt(format!(
                "not a safetensors file: its first 8 bytes give a header length of \
                 {header_len} bytes, beyond the limit of {MAX_HEADER_BYTES}"
            )));
        }
        if 8 + header_len > len {
            return Err(corrupt(format!(
                "truncated or padded file ({len} bytes): the header needs {header_len} bytes"
            )));
        }
        let header = read_vec(file.as_ref(), 8, header_len, path)?;
        let header_digest = {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update(prefix);
            h.update(&header);
            h.finalize().into()
        };
        let metadata: safetensors::tensor::Metadata = serde_json::from_slice(&header)
            .map_err(|e| corrupt(format!("not a valid safetensors file: {e}")))?;
        let data_start = 8 + header_len;
        let mut tensors: Vec<Stored> = metadata
            .tensors()
            .into_iter()
            .map(|(name, t)| Stored {
                name,
                dtype: t.dtype,
                shape: t.shape.clone(),
                range: t.data_offsets.0 as u64..t.data_offsets.1 as u64,
            })
            .collect();
        if let Some(t) = tensors.iter().find(|t| t.shape.len() > MAX_DIMS) {
            return Err(corrupt(format!(
                "tensor {:?} has {} dimensions, beyond {MAX_DIMS}",
                shorten(&t.name),
                t.shape.len()
            )));
        }
        tensors.sort_by_key(|t| t.range.start);
        // safetensors checked that the ranges are contiguous from 0 and match the shapes; the
        // data must end exactly where the file does.
        let data_len = tensors.last().map_or(0, |t| t.range.end);
        if data_start + data_len != len {
            return Err(corrupt(format!(
                "truncated or padded file ({len} bytes): the header describes {} bytes",
                data_start + data_len
            )));
        }
        let by_name = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        let info: BTreeMap<String, String> = metadata
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();

        let mut file = CheckpointFile {
            path: path.clone(),
            file,
            len,
            data_start,
            kind: Kind::Weights,
            sums: None,
            info,
            tensors,
            by_name,
            header_digest,
        };
        if layout::is_own(&file.info) {
            file.check_own_header(&header)?;
        }
        if verify == Verify::Full {
            file.verify_tensors()?;
        }
        Ok(file)
    }

    fn check_own_header(&mut self, header: &[u8]) -> Result<(), Error> {
        let corrupt = |reason: String| Error::corrupt(&self.path, reason);
        let format = self.info.get(layout::KEY_FORMAT).map(String::as_str);
        if format != Some(layout::FORMAT_NAME) {
            return Err(corrupt(format!(
                "format is {}, expected {:?}: the header was altered",
                format.map_or("missing".to_owned(), |f| format!("{:?}", shorten(f))),
                layout::FORMAT_NAME
            )));
        }
        let version = self
            .info
            .get(layout::KEY_VERSION)
            .map(String::as_str)
            .unwrap_or("");
        if version != layout::FORMAT_VERSION.to_string() {
            return Err(corrupt(format!(
                "unsupported format version {:?} (this build reads version {})",
                shorten(version),
                layout::FORMAT_VERSION
            )));
        }
        let Some(range) = layout::header_sum_range(header) else {
            return Err(corrupt("header checksum missing or repeated".into()));
        };
        // The exact bytes written: eight lowercase hex digits, so that no other spelling of
        // the same number (upper case, a sign) passes.
        let stored = &header[range.clone()];
        let actual = layout::crc_hex(layout::header_checksum(header, range));
        if stored != actual.as_bytes() {
            return Err(corrupt(format!(
                "header checksum mismatch (stored {:?}, computed {actual}): the header was altered",
                String::from_utf8_lossy(stored)
            )));
        }
        let kind = self
            .info
            .get(layout::KEY_KIND)
            .map(String::as_str)
            .unwrap_or("");
        self.kind = Kind::parse(kind)
            .ok_or_else(|| corrupt(format!("unknown kind {:?}", shorten(kind))))?;
        let algorithm = self.info.get(layout::KEY_ALGORITHM).map(String::as_str);
        if algorithm != Some(layout::ALGORITHM) {
            return Err(corrupt(format!(
                "unknown checksum algorithm {:?}",
                algorithm.map(shorten)
            )));
        }
        let sums_text = self
            .info
            .get(layout::KEY_TENSOR_SUMS)
            .map(String::as_str)
            .unwrap_or("");
        let sums: BTreeMap<String, String> = serde_json::from_str(sums_text)
            .map_err(|e| corrupt(format!("tensor checksums unreadable: {e}")))?;
        let mut parsed = BTreeMap::new();
        for (name, hex) in sums {
            let sum = layout::parse_crc_hex(&hex).ok_or_else(|| {
                corrupt(format!(
                    "checksum of tensor {:?} is not 8 lowercase hex digits: {:?}",
                    shorten(&name),
                    shorten(&hex)
                ))
            })?;
            parsed.insert(name, sum);
        }
        for t in &self.tensors {
            if !parsed.contains_key(&t.name) {
                return Err(corrupt(format!(
                    "tensor {:?} has no checksum",
                    shorten(&t.name)
                )));
            }
        }
        if parsed.len() != self.tensors.len() {
            let extra = parsed
                .keys()
                .find(|n| !self.by_name.contains_key(*n))
                .map_or("?", String::as_str);
            return Err(corrupt(format!(
                "tensor {:?} is listed but missing",
                shorten(extra)
            )));
        }
        self.sums = Some(parsed);
        Ok(())
    }

    /// Checks every tensor's bytes against its checksum (a no-op for files without them),
    /// reading the file in chunks: memory stays bounded whatever the file's size.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] naming the first tensor whose bytes changed, or a file that was
    /// truncated while it was read.
    pub fn verify_tensors(&self) -> Result<(), Error> {
        if self.sums.is_none() {
            return Ok(());
        }
        let mut buf = Vec::new();
        buf.try_reserve_exact(CHUNK.min(self.len as usize))
            .map_err(|e| self.too_large("a read buffer", e))?;
        for t in self.tensors() {
            let mut reader = self.reader_of(t);
            loop {
                buf.clear();
                let n = (&mut reader)
                    .take(CHUNK as u64)
                    .read_to_end(&mut buf)
                    .map_err(|e| self.read_error(t.name, e))?;
                if n == 0 {
                    break;
                }
            }
        }
        Ok(())
    }

    /// The bytes of the tensor called `name`, checked against its stored checksum as they
    /// are read (so a file changed since it was opened fails here).
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] for a tensor that is not in the file, whose bytes do not match its
    /// checksum, or that the file no longer holds (truncated since it was opened);
    /// [`Error::TooLarge`] when memory for it cannot be had.
    pub fn read(&self, name: &str) -> Result<Vec<u8>, Error> {
        let t = self.tensor(name).ok_or_else(|| {
            Error::corrupt(
                &self.path,
                format!("tensor {:?} is not in the file", shorten(name)),
            )
        })?;
        if t.len < PARALLEL_READ || t.checksum.is_none() {
            let mut out = Vec::new();
            out.try_reserve_exact(t.len)
                .map_err(|e| self.too_large(&format!("tensor {:?}", shorten(name)), e))?;
            self.reader_of(t)
                .read_to_end(&mut out)
                .map_err(|e| self.read_error(t.name, e))?;
            return Ok(out);
        }
        // A large tensor: read by the backend into new memory, with its checksum computed as
        // the bytes arrive (see `ObjectReader::read_new_with_crc`).
        let start = self.data_start + self.tensors[t.index].range.start;
        let (out, computed) =
            self.file
                .read_new_with_crc(t.len, start)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::OutOfMemory => {
                        self.too_large(&format!("tensor {:?}", shorten(name)), e)
                    }
                    _ => self.read_error(t.name, e),
                })?;
        if let Some(expected) = t.checksum.filter(|&e| e != computed) {
            return Err(self.read_error(t.name, mismatch(t.name, expected, computed)));
        }
        Ok(out)
    }

    /// Whether the tensor called `name` holds exactly the bytes `data` hands over, read in
    /// bounded chunks and checked against its checksum as they are (after a difference the
    /// rest is read too, so that bytes that fail their checksum are an error, not `false`):
    /// what a content-addressed blob found on storage is confirmed by before it is reused.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] for a tensor that is not in the file, whose bytes fail their
    /// checksum or that the file no longer holds; the storage's read errors;
    /// [`Error::TensorName`] when `data` cannot hand its bytes over.
    pub fn holds_bytes(&self, name: &str, data: &dyn TensorData) -> Result<bool, Error> {
        let t = self.tensor(name).ok_or_else(|| {
            Error::corrupt(
                &self.path,
                format!("tensor {:?} is not in the file", shorten(name)),
            )
        })?;
        if t.len != data.byte_len() {
            return Ok(false);
        }
        let mut reader = self.reader_of(t);
        let mut buf = Vec::new();
        buf.try_reserve_exact(CHUNK.min(t.len))
            .map_err(|e| self.too_large("a read buffer", e))?;
        let (mut read_failed, mut differs) = (None, false);
        let stop = || std::io::Error::other("stopped");
        let handed = data.write_to(&mut |piece| {
            for part in piece.chunks(CHUNK) {
                buf.resize(part.len(), 0);
                if let Err(e) = reader.read_exact(&mut buf) {
                    read_failed = Some(e);
                    return Err(stop());
                }
                if buf.as_slice() != part {
                    differs = true;
                    return Err(stop());
                }
            }
            Ok(())
        });
        if let Some(e) = read_failed {
            return Err(self.read_error(t.name, e));
        }
        if differs {
            // Read on to the end, where the checksum is checked: bytes that fail it are
            // damage (a Corrupt error), not other bytes.
            loop {
                buf.resize(CHUNK.min(t.len), 0);
                match reader.read(&mut buf) {
                    Ok(0) => return Ok(false),
                    Ok(_) => {}
                    Err(e) => return Err(self.read_error(t.name, e)),
                }
            }
        }
        handed.map_err(|_| Error::TensorName {
            name: shorten(name),
            reason: "its bytes could not be read to compare them with a stored copy",
        })?;
        // Every byte of the tensor read (and so its checksum checked), or fewer handed over.
        Ok(reader.next == reader.end)
    }

    /// A reader of the tensor called `name`'s bytes, for streaming through a large tensor in
    /// bounded memory; at its end it checks the bytes read against the stored checksum and
    /// fails with [`std::io::ErrorKind::InvalidData`] if they differ.
    pub fn reader(&self, name: &str) -> Option<TensorReader<'_>> {
        self.tensor(name).map(|t| self.reader_of(t))
    }

    fn reader_of<'a>(&'a self, t: TensorRef<'a>) -> TensorReader<'a> {
        let range = self.tensors[t.index].range.clone();
        TensorReader {
            name: t.name,
            file: self.file.as_ref(),
            next: self.data_start + range.start,
            end: self.data_start + range.end,
            hasher: crc32fast::Hasher::new(),
            expected: t.checksum,
        }
    }

    fn read_error(&self, name: &str, e: std::io::Error) -> Error {
        let reason = match e.kind() {
            std::io::ErrorKind::InvalidData => e.to_string(),
            std::io::ErrorKind::UnexpectedEof => format!(
                "the file ends before tensor {:?} does: it was truncated while being read",
                shorten(name)
            ),
            _ => return Error::io("read", &self.path, e),
        };
        Error::corrupt(&self.path, reason)
    }

    fn too_large(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::TooLarge {
            what: format!("{what} of {}", self.path.display()),
            reason: e.to_string(),
        }
    }

    /// SHA-256 of the file's length prefix and header: what names this exact file (its
    /// metadata, and through the checksums its tensors) without trusting anything in it.
    pub fn header_digest(&self) -> [u8; 32] {
        self.header_digest
    }

    /// The file's name.
    pub fn path(&self) -> &Name {
        &self.path
    }

    /// Weights only, or a full checkpoint.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether the file carries this format's checksums (files from other tools do not).
    pub fn has_checksums(&self) -> bool {
        self.sums.is_some()
    }

    /// The `__metadata__` entries.
    pub fn info(&self) -> &BTreeMap<String, String> {
        &self.info
    }

    /// What `ModelCheckpoint` recorded in the file: the epoch, batch and step of the save,
    /// the logs, the monitor, the run (empty for files of other tools).
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] naming the field out of range or malformed.
    pub fn meta(&self) -> Result<super::Meta, Error> {
        super::Meta::from_info(&self.info).map_err(|reason| Error::corrupt(&self.path, reason))
    }

    /// The training state of a full checkpoint (`None` for a weights-only file, or one of
    /// another tool).
    ///
    /// # Errors
    ///
    /// [`Error::BadTrainingState`] for a training state that is not a document of this
    /// shape.
    pub fn training_state(&self) -> Result<Option<crate::document::TrainingDocument>, Error> {
        let Some(text) = self.info.get(super::KEY_TRAINING_STATE) else {
            return Ok(None);
        };
        crate::document::TrainingDocument::parse(text)
            .map(Some)
            .map_err(|e| Error::BadTrainingState {
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }

    /// The file's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty (never true for a file that opened).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tensors in file order.
    pub fn tensors(&self) -> impl Iterator<Item = TensorRef<'_>> {
        (0..self.tensors.len()).map(move |i| self.entry(i))
    }

    fn entry(&self, index: usize) -> TensorRef<'_> {
        let s = &self.tensors[index];
        TensorRef {
            name: &s.name,
            dtype: s.dtype,
            shape: &s.shape,
            len: (s.range.end - s.range.start) as usize,
            checksum: self
                .sums
                .as_ref()
                .and_then(|sums| sums.get(s.name.as_str()).copied()),
            index,
        }
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<TensorRef<'_>> {
        self.by_name.get(name).map(|&i| self.entry(i))
    }
}

/// Streams one tensor's bytes out of a [`CheckpointFile`] with positioned reads, checking
/// its checksum when the last byte has been read.
pub struct TensorReader<'a> {
    name: &'a str,
    file: &'a dyn ObjectReader,
    next: u64,
    end: u64,
    hasher: crc32fast::Hasher,
    expected: Option<u32>,
}

impl Read for TensorReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.end - self.next;
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let buf = &mut buf[..n];
        self.file.read_exact_at(buf, self.next)?;
        self.hasher.update(buf);
        self.next += n as u64;
        if self.next == self.end {
            if let Some(expected) = self.expected {
                let actual = std::mem::take(&mut self.hasher).finalize();
                if actual != expected {
                    return Err(mismatch(self.name, expected, actual));
                }
            }
        }
        Ok(n)
    }
}

/// The error of tensor `name`'s bytes whose CRC-32 is `actual` where `expected` was stored.
fn mismatch(name: &str, expected: u32, actual: u32) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "checksum mismatch in tensor {:?} (stored {}, computed {}): its bytes were altered",
            shorten(name),
            layout::crc_hex(expected),
            layout::crc_hex(actual)
        ),
    )
}

fn read_exact_at(
    file: &dyn ObjectReader,
    buf: &mut [u8],
    offset: u64,
    path: &Name,
) -> Result<(), Error> {
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::corrupt(path, "the file was truncated while being read")
        } else {
            Error::io("read", path, e)
        }
    })
}

fn read_vec(file: &dyn ObjectReader, offset: u64, len: u64, path: &Name) -> Result<Vec<u8>, Error> {
    let len = usize::try_from(len).map_err(|_| Error::TooLarge {
        what: format!("the header of {}", path.display()),
        reason: format!("{len} bytes"),
    })?;
    let mut buf = Vec::new();
    buf.try_reserve_exact(len).map_err(|e| Error::TooLarge {
        what: format!("the header of {}", path.display()),
        reason: e.to_string(),
    })?;
    buf.resize(len, 0);
    read_exact_at(file, &mut buf, offset, path)?;
    Ok(buf)
}

/// At most a few hundred characters of a value read from a file, for error messages.
pub(crate) fn shorten(s: &str) -> String {
    crate::text::shorten(s, 200)
}

/// SHA-256 of `bytes`.
pub(crate) fn digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}
