//! A location (a local path or an `s3://` URL) to the storage that holds it and its
//! checked name. An object store's client (and the tokio runtime inside it) is made once
//! per bucket and kept for the life of the process, as `hf_xet` keeps its runtime.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use model_checkpoint::store::{LocalFolder, Name, Storage};
use model_checkpoint_object_store::{is_remote, ObjectStorage};

/// The storage for `location` and its name there.
///
/// # Errors
///
/// `BadLocation` for a name that is not one, the object store's configuration errors.
pub(crate) fn locate(location: &str) -> Result<(Arc<dyn Storage>, Name), model_checkpoint::Error> {
    let name = Name::new(location)?;
    if !is_remote(location) {
        return Ok((Arc::new(LocalFolder::default()), name));
    }
    static CLIENTS: OnceLock<Mutex<BTreeMap<String, Arc<dyn Storage>>>> = OnceLock::new();
    let mut clients = CLIENTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let bucket = name.root().to_owned();
    if let Some(storage) = clients.get(&bucket) {
        return Ok((storage.clone(), name));
    }
    let storage: Arc<dyn Storage> = Arc::new(ObjectStorage::from_env(location)?);
    clients.insert(bucket, storage.clone());
    Ok((storage, name))
}
