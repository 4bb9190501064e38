//! Where a checkpoint, a folder or a template is: a local path, or an `s3://` URL served by
//! `model-checkpoint-object-store` (credentials and endpoint from the `AWS_*` variables).
//! Every subcommand reaches files through this, so each works the same on both.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use model_checkpoint::restore::AnyCheckpoint;
use model_checkpoint::store::{self, CheckpointFile, Listed, LocalFolder, Name, Storage, Verify};
use model_checkpoint_object_store::{is_remote, ObjectStorage};

use crate::Failure;

/// A checkpoint or a folder, and the storage it lives in.
pub(crate) struct Location {
    pub storage: Arc<dyn Storage>,
    /// The name `storage` knows it by: the path, or the URL.
    pub name: Name,
    remote: bool,
    /// Whether it was written with a trailing `/` (a folder, on an object store).
    slash: bool,
}

/// The storage for `location` (a path or template, or a URL).
pub(crate) fn storage_for(location: &str) -> Result<Arc<dyn Storage>, Failure> {
    if is_remote(location) {
        Ok(Arc::new(ObjectStorage::from_env(location)?))
    } else {
        Ok(Arc::new(LocalFolder::default()))
    }
}

/// The name `name` (a path or a URL) is known by when telling whether two names are the
/// same object: a URL normalised (`store::normalize`); a local path made absolute and
/// normalised, with the links of its longest part that exists resolved. Names of different
/// storages never compare equal (a URL keeps its scheme).
pub(crate) fn identity(name: &str) -> String {
    if is_remote(name) {
        return store::normalize(name);
    }
    let path = Path::new(name);
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        match std::env::current_dir() {
            Ok(cwd) => cwd.join(path),
            Err(_) => return store::normalize(name),
        }
    };
    // Lexically first, as the storage resolves `.` and `..`; then the links.
    let lexical = PathBuf::from(store::normalize(&absolute.to_string_lossy()));
    let mut existing = lexical.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(mut resolved) = existing.canonicalize() {
            resolved.extend(rest.iter().rev());
            return store::normalize(&resolved.to_string_lossy());
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(file)) => {
                rest.push(file.to_owned());
                existing = parent;
            }
            _ => return lexical.to_string_lossy().into_owned(),
        }
    }
}

/// Whether `inner` (an [`identity`]) is `outer` or inside it.
pub(crate) fn within(inner: &str, outer: &str) -> bool {
    inner
        .strip_prefix(outer.trim_end_matches('/'))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl Location {
    pub fn of(path: &Path) -> Result<Location, Failure> {
        let text = path.to_string_lossy();
        let name = Name::new(&text)?;
        Ok(Location {
            storage: storage_for(&text)?,
            remote: is_remote(&text),
            slash: text.ends_with('/'),
            name,
        })
    }

    /// Another name in the same storage.
    pub fn at(&self, name: Name) -> Location {
        Location {
            storage: self.storage.clone(),
            slash: false,
            remote: self.remote,
            name,
        }
    }

    pub fn is_remote(&self) -> bool {
        self.remote
    }

    /// The name this location is known by when telling whether two names are the same
    /// object (see [`identity`]).
    pub fn identity(&self) -> String {
        identity(self.name.as_str())
    }

    /// Whether this names a folder: a local folder, or a prefix that is not itself an
    /// object.
    pub fn is_folder(&self) -> Result<bool, Failure> {
        if self.remote {
            Ok(self.slash || !self.storage.exists(&self.name)?)
        } else {
            Ok(self.name.as_path().is_dir())
        }
    }

    pub fn open(&self, verify: Verify) -> Result<CheckpointFile, Failure> {
        Ok(CheckpointFile::open_in(&*self.storage, &self.name, verify)?)
    }

    /// Opens another object of the same storage.
    pub fn open_other(
        &self,
        name: &Name,
        verify: Verify,
    ) -> Result<CheckpointFile, model_checkpoint::Error> {
        CheckpointFile::open_in(&*self.storage, name, verify)
    }

    /// The folder's checkpoints in training order, with their headers read.
    pub fn listed(&self) -> Result<Vec<Listed>, Failure> {
        // `list_in` orders them so already.
        Ok(store::list_in(&*self.storage, &self.name, 0)?)
    }

    /// The folder's candidate files, by name.
    pub fn files(&self) -> Result<Vec<Name>, Failure> {
        let mut names: Vec<Name> = store::list_in(&*self.storage, &self.name, 0)?
            .into_iter()
            .map(|l| l.path)
            .collect();
        names.sort();
        Ok(names)
    }

    /// The newest full checkpoint in this folder that verifies: a file, or a folder
    /// checkpoint one level down (deduplicated or sharded) whose index holds a training
    /// state; by the epoch and step saved in them, a file first on a tie.
    pub fn latest(&self) -> Result<Name, Failure> {
        Ok(
            model_checkpoint::restore::latest_resumable(&*self.storage, &self.name)?
                .name()
                .clone(),
        )
    }

    /// FOLDER, when this is `FOLDER/latest` and no such file exists: a name for the newest
    /// full checkpoint in FOLDER.
    fn latest_of(&self) -> Result<Option<Location>, Failure> {
        if self.name.file_name() != Some("latest") || self.storage.exists(&self.name)? {
            return Ok(None);
        }
        Ok(Some(self.at(self.name.parent())))
    }

    /// The checkpoint here, open: `FOLDER/latest` (when no such file exists) is the newest
    /// full checkpoint in FOLDER, as the search verified it; anything else is opened and
    /// verified whole.
    #[cfg_attr(not(feature = "train"), allow(dead_code))]
    pub fn open_checkpoint(&self) -> Result<AnyCheckpoint, Failure> {
        Ok(match self.latest_of()? {
            Some(folder) => {
                model_checkpoint::restore::latest_resumable(&*folder.storage, &folder.name)?
            }
            None => AnyCheckpoint::open(&*self.storage, &self.name, Verify::Full)?,
        })
    }

    /// `FOLDER/latest` (when no such file exists) as the newest full checkpoint in FOLDER;
    /// anything else as itself.
    pub fn resolve_latest(self) -> Result<Location, Failure> {
        match self.latest_of()? {
            Some(folder) => {
                let newest = folder.latest()?;
                Ok(folder.at(newest))
            }
            None => Ok(self),
        }
    }
}
