//! Object-storage measurements against a server given by `--s3 s3://bucket/prefix` and the
//! `AWS_*` variables (`bench/s3.sh` starts SeaweedFS on 127.0.0.1 and runs them).

use model_checkpoint::store::Name;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use model_checkpoint::store::{self, Kind, SaveOptions, Storage};
use model_checkpoint::{Callback, Context, Logs, ModelCheckpoint};
use model_checkpoint_object_store::ObjectStorage;
use serde_json::json;

use super::disk::{named, synthetic, Synthetic};
use super::{interleaved, median, ratio, secs};
use crate::Failure;

fn storage(prefix: &str) -> Result<ObjectStorage, Failure> {
    Ok(ObjectStorage::from_env(prefix)?)
}

/// A checkpoint save to S3 (a multipart upload, part 0 with the header last) against
/// object_store's own multipart upload of the same bytes, interleaved.
pub(super) fn save_vs_multipart(
    runs: u32,
    prefix: &str,
    bytes: u64,
    count: u64,
) -> Result<serde_json::Value, Failure> {
    let storage = storage(prefix)?;
    let model = synthetic(bytes, count);
    let tensors = named(&model);
    let pieces: Vec<&[u8]> = model.iter().map(|(_, t)| t.data()).collect();
    let (save_name, raw_name) = (
        format!("{prefix}/save.safetensors"),
        format!("{prefix}/raw.bin"),
    );
    let save = || -> Result<Duration, Failure> {
        let t = Instant::now();
        store::save_to(
            &storage,
            &Name::from(&save_name),
            Kind::Weights,
            &tensors,
            &BTreeMap::new(),
            &SaveOptions::default(),
        )?;
        Ok(t.elapsed())
    };
    let raw = || -> Result<Duration, Failure> {
        let t = Instant::now();
        storage.plain_multipart_upload(&raw_name, &pieces)?;
        Ok(t.elapsed())
    };
    let (s, r) = interleaved(runs, save, raw)?;
    storage.delete(&Name::from(&save_name))?;
    storage.delete(&Name::from(&raw_name))?;
    Ok(json!({
        "bench": "s3_save_vs_multipart", "mib": bytes >> 20, "tensors": count, "runs": runs,
        "part_mib": model_checkpoint_object_store::DEFAULT_PART_SIZE >> 20,
        "parts_in_flight": model_checkpoint_object_store::DEFAULT_PARTS_IN_FLIGHT,
        "save_s": secs(s), "plain_multipart_s": secs(r), "ratio": ratio(s, r),
    }))
}

/// The time the training thread is blocked by a background save to S3 (the snapshot copy
/// in the hook), against a synchronous save to S3 (the whole upload in the hook).
pub(super) fn stall_vs_sync(
    runs: u32,
    prefix: &str,
    bytes: u64,
    count: u64,
) -> Result<serde_json::Value, Failure> {
    let storage: std::sync::Arc<dyn Storage> = std::sync::Arc::new(storage(prefix)?);
    let model = Synthetic(synthetic(bytes, count));
    let logs = Logs::new();
    let callback = |name: &str, background: bool| {
        // Each in its own folder: one trainer per folder (the lock).
        ModelCheckpoint::new(format!("{prefix}/{name}/w.safetensors"))
            .storage(storage.clone())
            .save_weights_only(true)
            .background(background)
    };
    let mut sync_cb = callback("sync", false);
    let mut async_cb = callback("async", true);
    let mut ctx = Context::new(&model);
    sync_cb.on_train_begin(&logs, &mut ctx)?;
    async_cb.on_train_begin(&logs, &mut ctx)?;
    let hook = |cb: &mut ModelCheckpoint, epoch: usize| -> Result<Duration, Failure> {
        let mut ctx = Context::new(&model);
        let t = Instant::now();
        cb.on_epoch_end(epoch, &logs, &mut ctx)?;
        let stall = t.elapsed();
        // Not timed: the upload finishing on the writer thread.
        cb.flush()?;
        Ok(stall)
    };
    hook(&mut async_cb, 0)?;
    let (mut sync_stall, mut async_stall) = (Vec::new(), Vec::new());
    for epoch in 1..=runs as usize {
        sync_stall.push(hook(&mut sync_cb, epoch)?);
        async_stall.push(hook(&mut async_cb, epoch)?);
    }
    sync_cb.on_train_end(&logs, &mut ctx)?;
    async_cb.on_train_end(&logs, &mut ctx)?;
    for name in ["sync", "async"] {
        for object in storage.list(&Name::from(format!("{prefix}/{name}")), 0)? {
            storage.delete(&object.name)?;
        }
    }
    let (s, a) = (median(sync_stall), median(async_stall));
    Ok(json!({
        "bench": "s3_stall_vs_sync", "mib": bytes >> 20, "tensors": count, "runs": runs,
        "sync_save_s": secs(s), "background_stall_s": secs(a), "ratio": ratio(a, s),
    }))
}

/// A verified load from S3 (every tensor read through `CheckpointFile`, its checksum checked)
/// against object_store's own parallel download of the same object (ranged GETs of the
/// same part size, as many at once, nothing checked), interleaved.
pub(super) fn load_vs_download(
    runs: u32,
    prefix: &str,
    bytes: u64,
    count: u64,
) -> Result<serde_json::Value, Failure> {
    let storage = storage(prefix)?;
    let model = synthetic(bytes, count);
    let tensors = named(&model);
    let name = format!("{prefix}/load.safetensors");
    store::save_to(
        &storage,
        &Name::from(&name),
        Kind::Weights,
        &tensors,
        &BTreeMap::new(),
        &SaveOptions::default(),
    )?;
    let load = || -> Result<Duration, Failure> {
        let t = Instant::now();
        let file = store::CheckpointFile::open_in(
            &storage,
            &Name::from(&name),
            store::Verify::HeaderOnly,
        )?;
        let names: Vec<String> = file.tensors().map(|t| t.name.to_owned()).collect();
        let mut read = 0usize;
        for tensor in &names {
            read += file.read(tensor)?.len();
        }
        std::hint::black_box(read);
        Ok(t.elapsed())
    };
    let download = || -> Result<Duration, Failure> {
        let t = Instant::now();
        let bytes = storage.plain_parallel_download(
            &name,
            model_checkpoint_object_store::READ_PART as u64,
            model_checkpoint_object_store::READ_PARTS_IN_FLIGHT,
        )?;
        std::hint::black_box(bytes.len());
        Ok(t.elapsed())
    };
    let (l, d) = interleaved(runs, load, download)?;
    storage.delete(&Name::from(&name))?;
    Ok(json!({
        "bench": "s3_load_vs_download", "mib": bytes >> 20, "tensors": count, "runs": runs,
        "part_mib": model_checkpoint_object_store::READ_PART >> 20,
        "parts_in_flight": model_checkpoint_object_store::READ_PARTS_IN_FLIGHT,
        "verified_load_s": secs(l), "plain_parallel_download_s": secs(d), "ratio": ratio(l, d),
    }))
}
