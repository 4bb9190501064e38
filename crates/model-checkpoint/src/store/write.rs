//! Writing a checkpoint: one pass over the tensors' bytes, checksums on the way, one sync.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::Name;
use std::time::{Duration, Instant};

use super::layout::{self, crc_hex, Entry, Kind, PLACEHOLDER, RESERVED_KEYS};
use super::local::LocalFolder;
use super::storage::{Commit, PendingObject, Storage};
use crate::model::NamedTensor;
use crate::Error;

/// How checkpoints are written (Keras's `options` argument takes this type).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SaveOptions {
    /// Sync the file and its folder before a save counts as done, so that it survives a
    /// power cut. Default: `true`.
    pub durable: bool,
    /// What the commit does when the name is taken. Default: [`Commit::Replace`].
    pub commit: Commit,
}

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions {
            durable: true,
            commit: Commit::Replace,
        }
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

    /// Sets [`SaveOptions::commit`].
    pub fn commit(mut self, commit: Commit) -> Self {
        self.commit = commit;
        self
    }
}

/// What a save wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaveReport {
    /// The committed file.
    pub path: Name,
    /// Its size in bytes.
    pub bytes: u64,
    /// Time from the first byte written to the commit.
    pub elapsed: Duration,
    /// SHA-256 of the file's head (length prefix and header), as
    /// [`CheckpointFile::header_digest`](super::CheckpointFile::header_digest) computes it.
    pub header_digest: [u8; 32],
}

/// Large tensors go straight to the file; small ones are gathered so that each write call
/// carries at least this much.
const WRITE_BUFFER: usize = 4 << 20;

/// Pieces at least this large are checksummed on another thread while being written.
const PARALLEL_CHECKSUM: usize = 2 << 20;

/// Writes `tensors` and `info` to `path` as one safetensors file, atomically, in the local
/// file system.
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
/// See [`PendingFile::commit`](super::PendingFile::commit): with `options.durable`, the file
/// and its folder are synced.
pub fn save(
    path: &Path,
    kind: Kind,
    tensors: &[NamedTensor<'_>],
    info: &BTreeMap<String, String>,
    options: &SaveOptions,
) -> Result<SaveReport, Error> {
    save_with(
        &Name::from(path),
        kind,
        tensors,
        info,
        options,
        |head_len| {
            Ok(Box::new(LocalFolder::create_at(
                path,
                head_len,
                options.commit,
            )?))
        },
    )
}

/// Like [`save`], to the object `name` of `storage`.
///
/// # Errors
///
/// As [`save`], with the backend's errors.
pub fn save_to(
    storage: &dyn Storage,
    name: &Name,
    kind: Kind,
    tensors: &[NamedTensor<'_>],
    info: &BTreeMap<String, String>,
    options: &SaveOptions,
) -> Result<SaveReport, Error> {
    save_with(name, kind, tensors, info, options, |head_len| {
        storage.create(name, head_len, options.commit)
    })
}

/// The naming of a save after its content ([`save_by_content`]).
pub struct ContentName<'a> {
    /// One hasher per tensor, in the order of the tensors, seeded by the caller: each is fed
    /// the tensor's bytes as they are written.
    pub hashers: &'a mut [blake3::Hasher],
    /// The file name (in the folder) to commit as, from the hashers.
    pub name_of: &'a dyn Fn(&[blake3::Hasher]) -> String,
}

/// Saves `tensors` in the folder `dir` under a name made from their content, known only once
/// they are written: each tensor's bytes are hashed as they are streamed (large pieces on a
/// second core, beside the checksum), so the hash costs no pass of its own. Only where
/// [`Storage::names_after_writing`]; with [`Commit::CreateNew`], a file of that name already
/// there (the same content) is [`Error::AlreadyExists`] and this one is discarded: a backend
/// returns that error from the commit only (the hashers are complete then), never when the
/// pending object is created under its provisional name.
///
/// # Errors
///
/// As [`save_to`]; [`Error::BadLocation`] where the storage cannot rename a pending object.
pub fn save_by_content(
    storage: &dyn Storage,
    dir: &Name,
    kind: Kind,
    tensors: &[NamedTensor<'_>],
    info: &BTreeMap<String, String>,
    options: &SaveOptions,
    mut content: ContentName<'_>,
) -> Result<SaveReport, Error> {
    let started = Instant::now();
    let plan = Plan::new(kind, tensors, info, dir)?;
    if content.hashers.len() != tensors.len() {
        return Err(Error::BadLocation {
            location: dir.to_string(),
            reason: "one hasher per tensor is needed".to_owned(),
        });
    }
    let provisional = dir.join("content.safetensors");
    let pending = storage.create(&provisional, plan.head_len(), options.commit)?;
    let (path, bytes, header_digest) = plan.stream_named(
        tensors,
        pending,
        options.durable,
        dir,
        &provisional,
        Some(&mut content),
    )?;
    Ok(SaveReport {
        path,
        bytes,
        elapsed: started.elapsed(),
        header_digest,
    })
}

/// Plans the file, starts the pending object `create` makes for a head of the planned
/// length, streams the tensors into it and commits.
fn save_with(
    path: &Name,
    kind: Kind,
    tensors: &[NamedTensor<'_>],
    info: &BTreeMap<String, String>,
    options: &SaveOptions,
    create: impl FnOnce(u64) -> Result<Box<dyn PendingObject>, Error>,
) -> Result<SaveReport, Error> {
    let started = Instant::now();
    let plan = Plan::new(kind, tensors, info, path)?;
    let pending = create(plan.head_len())?;
    let (bytes, header_digest) = plan.stream(tensors, pending, options.durable, path)?;
    Ok(SaveReport {
        path: path.clone(),
        bytes,
        elapsed: started.elapsed(),
        header_digest,
    })
}

/// Checksums (and hashes) `piece` on this thread, and writes it.
fn write_here(
    piece: &[u8],
    hasher: &mut crc32fast::Hasher,
    blake: Option<&mut blake3::Hasher>,
    out: &mut impl Write,
) -> std::io::Result<()> {
    hasher.update(piece);
    if let Some(b) = blake {
        b.update(piece);
    }
    out.write_all(piece)
}

/// What a save will write: the metadata, the tensors' order and offsets, and the header's
/// length, which is known before any checksum is (every checksum has a fixed width).
struct Plan {
    info: BTreeMap<String, String>,
    order: Vec<usize>,
    entries: Vec<Entry>,
    draft_len: usize,
    data_len: usize,
}

impl Plan {
    /// `name` is where the file goes, for errors.
    fn new(
        kind: Kind,
        tensors: &[NamedTensor<'_>],
        info: &BTreeMap<String, String>,
        name: &Name,
    ) -> Result<Plan, Error> {
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
        // The keys this format reads back (epoch, step, logs, …) must hold what it reads,
        // or the file would list as damaged.
        super::meta::Meta::from_info(&info).map_err(|reason| Error::BadMetadata { reason })?;

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
            let dims = t.data.shape().len();
            if dims > super::MAX_DIMS {
                return Err(Error::TensorName {
                    name: t.name.clone(),
                    reason: "this tensor has more dimensions than a checkpoint holds (64)",
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
        let draft_len = layout::header_text(&entries, &info, &placeholders, PLACEHOLDER)
            .map_err(|e| Error::io("write", name, std::io::Error::other(e)))?
            .len();
        // A header no reader takes (this crate's, safetensors') would make a file nothing
        // opens, and replace a good one: refused before anything is written.
        if draft_len as u64 > super::MAX_HEADER_BYTES {
            return Err(Error::TooLarge {
                what: format!("the header of {name} (its tensors' names, shapes and metadata)"),
                reason: format!(
                    "{draft_len} bytes, beyond the {} that safetensors readers accept",
                    super::MAX_HEADER_BYTES
                ),
            });
        }
        Ok(Plan {
            info,
            order,
            entries,
            draft_len,
            data_len: offset,
        })
    }

    /// The length prefix and the header.
    fn head_len(&self) -> u64 {
        8 + self.draft_len as u64
    }

    /// Streams the tensors' bytes after the head, computing their checksums on the way, then
    /// commits with the head that holds them. Returns the object's size and its head's
    /// SHA-256.
    fn stream(
        &self,
        tensors: &[NamedTensor<'_>],
        pending: Box<dyn PendingObject>,
        durable: bool,
        name: &Name,
    ) -> Result<(u64, [u8; 32]), Error> {
        let (_, bytes, digest) = self.stream_named(tensors, pending, durable, name, name, None)?;
        Ok((bytes, digest))
    }

    /// [`Plan::stream`], feeding `content`'s hashers too, and renaming the object after
    /// them (in `dir`) before the commit; returns the name committed.
    fn stream_named(
        &self,
        tensors: &[NamedTensor<'_>],
        pending: Box<dyn PendingObject>,
        durable: bool,
        dir: &Name,
        name: &Name,
        mut content: Option<&mut ContentName<'_>>,
    ) -> Result<(Name, u64, [u8; 32]), Error> {
        let io = |e| Error::io("write", name, e);
        let mut sums = Vec::with_capacity(self.entries.len());
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, pending);
        for (&i, entry) in self.order.iter().zip(&self.entries) {
            let mut hasher = crc32fast::Hasher::new();
            let mut written = 0usize;
            let mut blake = content.as_mut().and_then(|c| c.hashers.get_mut(i));
            tensors[i]
                .data
                .write_to(&mut |piece| {
                    written += piece.len();
                    if piece.len() < PARALLEL_CHECKSUM {
                        return write_here(piece, &mut hasher, blake.as_deref_mut(), &mut out);
                    }
                    // A large piece is checksummed (and hashed) on a second core while this
                    // one hands it to the kernel, so that neither costs time.
                    let hashing = blake.is_some();
                    let theirs = blake.as_deref_mut();
                    let mut ours = crc32fast::Hasher::new();
                    let threaded = std::thread::scope(|scope| {
                        let spawned = std::thread::Builder::new().spawn_scoped(scope, || {
                            let mut h = crc32fast::Hasher::new();
                            h.update(piece);
                            if let Some(b) = theirs {
                                b.update(piece);
                            }
                            h
                        });
                        // No second thread to be had (the process's limit): done here below.
                        let sum = spawned.ok()?;
                        let written = out.write_all(piece);
                        Some(match sum.join() {
                            Ok(h) => {
                                ours = h;
                                written
                            }
                            // The content hash is lost with the thread: no name to give.
                            Err(_) if hashing => {
                                written.and(Err(std::io::Error::other("the hashing thread failed")))
                            }
                            Err(_) => {
                                ours.update(piece);
                                written
                            }
                        })
                    });
                    match threaded {
                        Some(written) => {
                            hasher.combine(&ours);
                            written
                        }
                        None => write_here(piece, &mut hasher, blake.as_deref_mut(), &mut out),
                    }
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
        let pending = out.into_inner().map_err(|e| io(e.into_error()))?;

        // The header with the checksums: same structure and widths as the draft, so the
        // same length as the bytes reserved for it.
        let text = layout::header_text(&self.entries, &self.info, &sums, PLACEHOLDER)
            .map_err(|e| io(std::io::Error::other(e)))?;
        // Never differs (every checksum has the placeholder's width); checked all the same,
        // because a storage that took a head of another length would shift every tensor.
        if text.len() != self.draft_len {
            return Err(io(std::io::Error::other(format!(
                "the header came out {} bytes long where {} were reserved",
                text.len(),
                self.draft_len
            ))));
        }
        let Some(range) = layout::header_sum_range(text.as_bytes()) else {
            return Err(io(std::io::Error::other(
                "the header holds no single header checksum",
            )));
        };
        let header_sum = layout::header_checksum(text.as_bytes(), range.clone());
        let mut head = Vec::with_capacity(8 + text.len());
        head.extend_from_slice(&(text.len() as u64).to_le_bytes());
        let mut header = text.into_bytes();
        header[range].copy_from_slice(crc_hex(header_sum).as_bytes());
        head.extend_from_slice(&header);
        let bytes = head.len() as u64 + self.data_len as u64;
        let digest = super::read::digest(&head);
        let mut pending = pending;
        let committed = match content {
            Some(c) => {
                let file = (c.name_of)(c.hashers);
                pending.rename_to(&file)?;
                dir.join(&file)
            }
            None => name.clone(),
        };
        pending.commit(&head, durable)?;
        Ok((committed, bytes, digest))
    }
}
