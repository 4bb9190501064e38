//! Deduplicated saves against plain ones, through `ModelCheckpoint` (each side keeping its
//! newest checkpoint): a fine-tune whose model is 90% frozen, and a model of which every
//! tensor changes between saves (nothing to share).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use model_checkpoint::sharded::{read_index, INDEX_FILE};
use model_checkpoint::store::{LocalFolder, Name};
use model_checkpoint::{Callback, Context, HostTensor, Logs, ModelCheckpoint, TensorData as _};
use serde_json::json;

use super::disk::{synthetic, Synthetic};
use super::{median, ratio, secs};
use crate::Failure;

/// The tensors from `from` on, changed for save `step` (one element each: a tensor that
/// changes at all gets a new blob).
fn train_step(model: &mut [(String, HostTensor)], from: usize, step: u64) -> Result<(), Failure> {
    for (_, t) in model.iter_mut().skip(from) {
        let mut data = t.data().to_vec();
        for (b, s) in data.iter_mut().zip(step.to_le_bytes()) {
            *b ^= s | 1;
        }
        *t = HostTensor::new(t.dtype(), t.shape().to_vec(), data)?;
    }
    Ok(())
}

/// Bytes of the files the checkpoint `dir` names that `before` did not (what its save
/// wrote: blobs are written only when absent), and its files.
fn written(
    dir: &Path,
    before: &BTreeSet<(Name, u64)>,
) -> Result<(u64, BTreeSet<(Name, u64)>), Failure> {
    let storage = LocalFolder::default();
    let folder = Name::from(dir);
    let index = read_index(&storage, &folder.join(INDEX_FILE))?;
    let s = &index.model_checkpoint;
    let files: BTreeSet<(Name, u64)> = s
        .shards
        .iter()
        .chain(s.blobs.iter().flatten())
        .map(|e| (folder.join(&e.file), e.bytes))
        .collect();
    let new = files.difference(before).map(|(_, b)| b).sum();
    Ok((new, files))
}

/// One save by `cb` of `model` at `epoch`, timed.
fn timed(cb: &mut ModelCheckpoint, model: &Synthetic, epoch: usize) -> Result<Duration, Failure> {
    let mut ctx = Context::new(model);
    cb.on_epoch_begin(epoch, &Logs::new(), &mut ctx)?;
    let started = Instant::now();
    cb.on_epoch_end(
        epoch,
        &Logs::from([("loss", 1.0 / (epoch + 1) as f64)]),
        &mut ctx,
    )?;
    Ok(started.elapsed())
}

pub(super) fn dedup(
    runs: u32,
    dir: &Path,
    bytes: u64,
    count: u64,
) -> Result<serde_json::Value, Failure> {
    let count = count.max(10) as usize;
    let frozen = count - count / 10;
    let mut model = Synthetic(synthetic(bytes, count as u64));
    let template = |side: &str| dir.join(side).join("e{epoch:05d}.safetensors");
    let mut plain = ModelCheckpoint::new(template("plain"))
        .save_weights_only(true)
        .keep_last(1);
    let mut dedup = ModelCheckpoint::new(template("dedup"))
        .save_weights_only(true)
        .keep_last(1)
        .dedup(true);
    for cb in [&mut plain, &mut dedup] {
        cb.on_train_begin(&Logs::new(), &mut Context::new(&model))?;
    }
    // The first save writes every blob; the fine-tune's saves follow.
    let mut epoch = 0;
    timed(&mut dedup, &model, epoch)?;
    let (_, mut files) = written(&dir.join("dedup/e00001.safetensors"), &BTreeSet::new())?;
    let (mut t_plain, mut t_dedup, mut w_dedup) = (Vec::new(), Vec::new(), Vec::new());
    let (mut n_plain, mut n_dedup) = (Vec::new(), Vec::new());
    // The fine-tune (the frozen tensors stay), then nothing shared (every tensor changes).
    for (changed_from, fine_tune) in [(frozen, true), (0, false)] {
        for run in 0..runs {
            epoch += 1;
            train_step(&mut model.0, changed_from, epoch as u64)?;
            // Alternating which side goes first, against the disk's drift.
            for is_plain in [run % 2 == 0, run % 2 != 0] {
                let side = if is_plain { &mut plain } else { &mut dedup };
                let took = timed(side, &model, epoch)?;
                match (is_plain, fine_tune) {
                    (true, true) => t_plain.push(took),
                    (false, true) => {
                        t_dedup.push(took);
                        let folder = dir.join(format!("dedup/e{:05}.safetensors", epoch + 1));
                        let (new, now) = written(&folder, &files)?;
                        w_dedup.push(new);
                        files = now;
                    }
                    (true, false) => n_plain.push(took),
                    (false, false) => n_dedup.push(took),
                }
            }
        }
    }
    let plain_file = dir.join(format!("plain/e{:05}.safetensors", epoch + 1));
    let plain_bytes = std::fs::metadata(&plain_file)
        .map_err(|e| format!("{}: {e}", plain_file.display()))?
        .len();
    for cb in [&mut plain, &mut dedup] {
        cb.on_train_end(&Logs::new(), &mut Context::new(&model))?;
    }
    drop(dedup);
    // A requeued job, in a new callback that knows no blob: its first save finds the frozen
    // tensors' blobs there and reads each once (compared with the tensor) before reusing
    // it; its second save knows them.
    let (mut r_first, mut r_second) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let mut requeued = ModelCheckpoint::new(template("dedup"))
            .save_weights_only(true)
            .keep_last(1)
            .dedup(true);
        requeued.on_train_begin(&Logs::new(), &mut Context::new(&model))?;
        for times in [&mut r_first, &mut r_second] {
            epoch += 1;
            train_step(&mut model.0, frozen, epoch as u64)?;
            times.push(timed(&mut requeued, &model, epoch)?);
        }
        requeued.on_train_end(&Logs::new(), &mut Context::new(&model))?;
    }
    w_dedup.sort_unstable();
    let written_median = w_dedup[w_dedup.len() / 2];
    let (tp, td) = (median(t_plain), median(t_dedup));
    let (np, nd) = (median(n_plain), median(n_dedup));
    Ok(json!({
        "bench": "dedup", "mib": bytes >> 20, "tensors": count, "frozen_fraction": frozen as f64 / count as f64, "runs": runs,
        "fine_tune_plain_save_s": secs(tp), "fine_tune_dedup_save_s": secs(td),
        "fine_tune_dedup_over_plain_time": ratio(td, tp),
        "plain_bytes_per_checkpoint": plain_bytes, "dedup_bytes_written_per_checkpoint": written_median,
        "dedup_written_over_plain_bytes": (written_median as f64 / plain_bytes.max(1) as f64 * 1e4).round() / 1e4,
        "nothing_shared_plain_save_s": secs(np), "nothing_shared_dedup_save_s": secs(nd),
        "nothing_shared_dedup_over_plain_time": ratio(nd, np),
        "requeued_first_dedup_save_s": secs(median(r_first)),
        "requeued_second_dedup_save_s": secs(median(r_second)),
    }))
}
