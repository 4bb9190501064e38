//! Reading a checkpoint through a memory map, and verifying it.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;

use super::layout::{self, Kind};
use crate::model::Dtype;
use crate::Error;

/// Whether [`CheckpointFile::open`] checks tensor checksums.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Verify {
    /// Check the header and every tensor (the default).
    #[default]
    Full,
    /// Check the header only, skipping the pass over the tensor bytes.
    HeaderOnly,
}

/// An open checkpoint file, memory-mapped.
///
/// Files written by other tools (plain safetensors from Python, say) open too: they count as
/// weights-only and carry no checksums, which [`CheckpointFile::has_checksums`] tells.
pub struct CheckpointFile {
    path: PathBuf,
    map: memmap2::Mmap,
    header_len: usize,
    info: BTreeMap<String, String>,
    kind: Kind,
    sums: Option<BTreeMap<String, u32>>,
    /// Names in file order, with their byte ranges within the data section.
    tensors: Vec<(String, Dtype, Vec<usize>, std::ops::Range<usize>)>,
}

/// A tensor inside an open [`CheckpointFile`], borrowing its bytes from the memory map.
#[derive(Clone, Copy, Debug)]
pub struct TensorRef<'a> {
    /// The name.
    pub name: &'a str,
    /// The element type.
    pub dtype: Dtype,
    /// The shape.
    pub shape: &'a [usize],
    /// The bytes, little-endian.
    pub data: &'a [u8],
    /// The stored checksum, if the file has them.
    pub checksum: Option<u32>,
}

impl CheckpointFile {
    /// Opens and checks `path`: the safetensors structure, the format version, the header
    /// checksum and, with [`Verify::Full`], every tensor's checksum.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be read; [`Error::Corrupt`] naming what is wrong for a
    /// truncated file, a damaged header, an unsupported format version, or a tensor whose
    /// bytes do not match their checksum.
    pub fn open(path: &Path, verify: Verify) -> Result<Self, Error> {
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
            return Err(Error::IsADirectory {
                path: path.to_path_buf(),
            });
        }
        // SAFETY: the map is read-only; a checkpoint being replaced is replaced by rename,
        // which leaves this inode intact. A process truncating the file in place would make
        // reads fault, which no writer of this crate ever does.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io("map", path, e))?;
        let parsed = SafeTensors::read_metadata(&map).map_err(|e| {
            let reason = match e {
                safetensors::SafeTensorError::MetadataIncompleteBuffer
                | safetensors::SafeTensorError::InvalidHeaderLength => {
                    format!("truncated or padded file ({} bytes): {e}", map.len())
                }
                other => format!("not a valid safetensors file: {other}"),
            };
            Error::corrupt(path, reason)
        })?;
        let (header_len, metadata) = parsed;
        let info: BTreeMap<String, String> = metadata
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut tensors: Vec<_> = metadata
            .tensors()
            .into_iter()
            .map(|(name, t)| {
                let range = t.data_offsets.0..t.data_offsets.1;
                (name, t.dtype, t.shape.clone(), range)
            })
            .collect();
        tensors.sort_by_key(|t| t.3.start);

        let mut file = CheckpointFile {
            path: path.to_path_buf(),
            map,
            header_len,
            kind: Kind::Weights,
            sums: None,
            info,
            tensors,
        };
        // Any one of the format's keys marks the file as ours, so that damage to one key
        // cannot make a file pass as a foreign file without checksums.
        if layout::RESERVED_KEYS
            .iter()
            .any(|k| file.info.contains_key(*k))
        {
            file.check_own_header()?;
        }
        if verify == Verify::Full {
            file.verify_tensors()?;
        }
        Ok(file)
    }

    fn check_own_header(&mut self) -> Result<(), Error> {
        let corrupt = |reason: String| Error::corrupt(&self.path, reason);
        let format = self.info.get(layout::KEY_FORMAT).map(String::as_str);
        if format != Some(layout::FORMAT_NAME) {
            return Err(corrupt(format!(
                "format is {format:?}, expected {:?}: the header was altered",
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
                "unsupported format version {version:?} (this build reads version {})",
                layout::FORMAT_VERSION
            )));
        }
        let header = self.map.get(8..8 + self.header_len).unwrap_or_default();
        let Some(range) = layout::header_sum_range(header) else {
            return Err(corrupt("header checksum missing or repeated".into()));
        };
        let stored = std::str::from_utf8(&header[range.clone()])
            .ok()
            .and_then(|h| u32::from_str_radix(h, 16).ok());
        let actual = layout::header_checksum(header, range);
        if stored != Some(actual) {
            return Err(corrupt(format!(
                "header checksum mismatch (stored {}, computed {}): the header was altered",
                self.info
                    .get(layout::KEY_HEADER_SUM)
                    .map_or("none", String::as_str),
                layout::crc_hex(actual)
            )));
        }
        let kind = self
            .info
            .get(layout::KEY_KIND)
            .map(String::as_str)
            .unwrap_or("");
        self.kind = Kind::parse(kind).ok_or_else(|| corrupt(format!("unknown kind {kind:?}")))?;
        let algorithm = self.info.get(layout::KEY_ALGORITHM).map(String::as_str);
        if algorithm != Some(layout::ALGORITHM) {
            return Err(corrupt(format!("unknown checksum algorithm {algorithm:?}")));
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
            let sum = u32::from_str_radix(&hex, 16)
                .map_err(|_| corrupt(format!("checksum of tensor {name:?} is not hex: {hex:?}")))?;
            parsed.insert(name, sum);
        }
        for (name, ..) in &self.tensors {
            if !parsed.contains_key(name) {
                return Err(corrupt(format!("tensor {name:?} has no checksum")));
            }
        }
        if let Some(extra) = parsed
            .keys()
            .find(|n| !self.tensors.iter().any(|t| &t.0 == *n))
        {
            return Err(corrupt(format!("tensor {extra:?} is listed but missing")));
        }
        self.sums = Some(parsed);
        Ok(())
    }

    /// Checks every tensor's bytes against its checksum (a no-op for files without them).
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] naming the first tensor whose bytes changed.
    pub fn verify_tensors(&self) -> Result<(), Error> {
        for t in self.tensors() {
            if let Some(stored) = t.checksum {
                let actual = crc32fast::hash(t.data);
                if actual != stored {
                    return Err(Error::corrupt(
                        &self.path,
                        format!(
                            "checksum mismatch in tensor {:?} (stored {}, computed {}): its bytes were altered",
                            t.name,
                            layout::crc_hex(stored),
                            layout::crc_hex(actual)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
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

    /// The file's size in bytes.
    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Whether the file is empty (never true for a file that opened).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The tensors in file order.
    pub fn tensors(&self) -> impl Iterator<Item = TensorRef<'_>> {
        let data_start = 8 + self.header_len;
        self.tensors
            .iter()
            .map(move |(name, dtype, shape, range)| TensorRef {
                name,
                dtype: *dtype,
                shape,
                // The safetensors reader checked that every range lies inside the file.
                data: self
                    .map
                    .get(data_start + range.start..data_start + range.end)
                    .unwrap_or_default(),
                checksum: self
                    .sums
                    .as_ref()
                    .and_then(|s| s.get(name.as_str()).copied()),
            })
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<TensorRef<'_>> {
        self.tensors().find(|t| t.name == name)
    }
}
