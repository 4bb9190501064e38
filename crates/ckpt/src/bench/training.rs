//! Training-side measurements: throughput with and without checkpoints, the stall of a
//! background save, and the cost of a hook that does not save.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use model_checkpoint::{Callback, Context, HookResult, Logs, ModelCheckpoint};
use model_checkpoint_candle::{Dataset, FitOptions, Model};

use crate::framework::{self, Framework};
use serde_json::json;

use super::{median, ratio, secs};
use crate::Failure;

/// Resident memory now, in bytes (Linux; `None` elsewhere).
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// A candle MLP of about `bytes` (square 4096-wide layers) and one sample to train it on.
struct BigModel {
    trainer_model: Model,
    optimizer: model_checkpoint_candle::Sgd,
    x: candle_core::Tensor,
    y: candle_core::Tensor,
}

impl BigModel {
    fn new(bytes: u64) -> Result<Self, Failure> {
        let width = 4096usize;
        let layers = (bytes / (width * width * 4) as u64).max(1) as usize;
        let model = Model::mlp(&vec![width; layers + 1], 0)?;
        let optimizer = model_checkpoint_candle::Sgd::new(
            model.named_vars(),
            model_checkpoint_candle::ParamsSgd {
                lr: 1e-6,
                ..Default::default()
            },
        )?;
        let x = candle_core::Tensor::ones((1, width), candle_core::DType::F32, model.device())
            .map_err(|e| e.to_string())?;
        let y = candle_core::Tensor::new(&[3u32], model.device()).map_err(|e| e.to_string())?;
        Ok(BigModel {
            trainer_model: model,
            optimizer,
            x,
            y,
        })
    }

    /// Forward and backward: reads the weights, changes nothing.
    fn compute(&self) -> Result<candle_core::backprop::GradStore, Failure> {
        let logits = self.trainer_model.forward(&self.x)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &self.y).map_err(|e| e.to_string())?;
        Ok(loss.backward().map_err(|e| e.to_string())?)
    }

    fn apply(&mut self, grads: &candle_core::backprop::GradStore) -> Result<(), Failure> {
        use model_checkpoint_candle::Optimizer as _;
        self.optimizer.step(grads)?;
        Ok(())
    }
}

pub(super) fn async_stall_vs_sync(
    runs: u32,
    dir: &Path,
    bytes: u64,
    _count: u64,
) -> Result<serde_json::Value, Failure> {
    let mut big = BigModel::new(bytes)?;
    let size: u64 = big
        .trainer_model
        .named_vars()
        .iter()
        .map(|(_, v)| v.elem_count() as u64 * 4)
        .sum();
    let fence = model_checkpoint::SnapshotFence::new();
    let logs = Logs::new();

    // Peak memory of a background save beyond the model (and beyond a training step's
    // gradients, which are freed by now): buffers allocated at on_train_begin, one save.
    let grads = big.compute()?;
    big.apply(&grads)?;
    drop(grads);
    let baseline = rss();
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (Arc::clone(&peak), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(r) = rss() {
                    peak.fetch_max(r, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let mut async_cb = ModelCheckpoint::new(dir.join("async.safetensors"))
        .save_weights_only(true)
        .background(true);
    {
        let mut ctx = Context::new(&big.trainer_model).with_fence(&fence);
        async_cb.on_train_begin(&logs, &mut ctx)?;
        async_cb.flush()?;
        async_cb.on_epoch_end(0, &logs, &mut ctx)?;
    }
    async_cb.flush()?;
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let extra = match (baseline, peak.load(Ordering::Relaxed)) {
        (Some(base), p) if p > 0 => {
            Some((p.saturating_sub(base) as f64 / size as f64 * 1e3).round() / 1e3)
        }
        _ => None,
    };

    // The stall: the save's hook, plus waiting before the next optimizer step (for a
    // background copy still running after that step's forward and backward).
    let mut sync_cb = ModelCheckpoint::new(dir.join("sync.safetensors")).save_weights_only(true);
    // One save, then what a training loop does next: the next step's forward and backward
    // (only where a background copy could overlap it), then the optimizer step, which first
    // waits on the fence.
    let mut grads = big.compute()?;
    let mut one = |cb: &mut ModelCheckpoint,
                   big: &mut BigModel,
                   fenced: bool,
                   epoch: usize|
     -> Result<(Duration, Option<Duration>), Failure> {
        let t = Instant::now();
        {
            let ctx = Context::new(&big.trainer_model);
            let mut ctx = if fenced { ctx.with_fence(&fence) } else { ctx };
            cb.on_epoch_end(epoch, &logs, &mut ctx)?;
        }
        let hook = t.elapsed();
        let mut compute = None;
        if cb.in_background() && fenced {
            let c = Instant::now();
            grads = big.compute()?;
            compute = Some(c.elapsed());
        }
        let t = Instant::now();
        fence.wait();
        let waited = t.elapsed();
        big.apply(&grads)?;
        cb.flush()?;
        Ok((hook + waited, compute))
    };
    let (mut sync_stall, mut async_stall, mut unfenced_stall, mut compute) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for epoch in 1..=runs as usize {
        sync_stall.push(one(&mut sync_cb, &mut big, true, epoch)?.0);
        let (stall, step) = one(&mut async_cb, &mut big, true, epoch)?;
        async_stall.push(stall);
        compute.extend(step);
        unfenced_stall.push(one(&mut async_cb, &mut big, false, epoch)?.0);
    }
    let (s, a) = (median(sync_stall), median(async_stall));
    Ok(json!({
        "bench": "async_stall_vs_sync", "mib": size >> 20, "model": "candle MLP, 4096-wide layers, SGD, batch 1", "runs": runs,
        "sync_stall_s": secs(s), "async_stall_s": secs(a), "ratio": ratio(a, s),
        "async_stall_without_fence_s": secs(median(unfenced_stall)),
        "forward_backward_s": secs(median(compute)),
        "async_peak_extra_memory_x_checkpoint": extra,
    }))
}

// ---------------------------------------------------------------------------------------

/// Time spent in a callback's hooks on the training thread, by kind of hook.
#[derive(Default, Clone, Copy)]
struct HookTime {
    /// `on_train_begin`.
    begin: Duration,
    /// Every epoch-end hook and the round end after it (where saves are decided and handed
    /// over).
    epochs: Duration,
    /// `on_train_end` (which waits for the last background save to be durable).
    end: Duration,
    /// The epoch-begin and test-begin and -end hooks.
    other: Duration,
}

/// A callback that forwards every hook to `inner` and adds up the time the hooks it reports
/// take: `on_train_begin`, `on_train_end`, each epoch's end with the round end after it,
/// and the epoch-begin and test-begin and -end hooks. The others (every batch's hooks, and
/// the round ends after any hook but an epoch's end) are forwarded untimed: reading the
/// clock around each, about 2,300 hooks a fit, would itself add about 0.1 ms to the fit
/// being measured. Their cost (a batch's end takes in the writer's finished saves and
/// frees what they took from the training thread) stays in the fit's time.
struct Timed<'c> {
    inner: &'c mut dyn Callback,
    time: HookTime,
    /// Whether the round now ending is an epoch's end.
    epoch_round: bool,
}

impl Timed<'_> {
    fn timed<T>(slot: &mut Duration, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        *slot += t.elapsed();
        out
    }
}

impl Callback for Timed<'_> {
    fn on_train_begin(&mut self, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
        Self::timed(&mut self.time.begin, || {
            self.inner.on_train_begin(logs, ctx)
        })
    }
    fn on_train_end(&mut self, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
        Self::timed(&mut self.time.end, || self.inner.on_train_end(logs, ctx))
    }
    fn on_epoch_begin(&mut self, epoch: usize, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
        Self::timed(&mut self.time.other, || {
            self.inner.on_epoch_begin(epoch, logs, ctx)
        })
    }
    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
        self.epoch_round = true;
        Self::timed(&mut self.time.epochs, || {
            self.inner.on_epoch_end(epoch, logs, ctx)
        })
    }
    fn on_train_batch_begin(
        &mut self,
        batch: usize,
        logs: &Logs,
        ctx: &mut Context<'_>,
    ) -> HookResult {
        self.inner.on_train_batch_begin(batch, logs, ctx)
    }
    fn on_train_batch_end(
        &mut self,
        batch: usize,
        logs: &Logs,
        ctx: &mut Context<'_>,
    ) -> HookResult {
        self.inner.on_train_batch_end(batch, logs, ctx)
    }
    fn on_test_batch_begin(
        &mut self,
        batch: usize,
        logs: &Logs,
        ctx: &mut Context<'_>,
    ) -> HookResult {
        self.inner.on_test_batch_begin(batch, logs, ctx)
    }
    fn on_test_batch_end(
        &mut self,
        batch: usize,
        logs: &Logs,
        ctx: &mut Context<'_>,
    ) -> HookResult {
        self.inner.on_test_batch_end(batch, logs, ctx)
    }
    fn on_test_begin(&mut self, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
        Self::timed(&mut self.time.other, || self.inner.on_test_begin(logs, ctx))
    }
    fn on_test_end(&mut self, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
        Self::timed(&mut self.time.other, || self.inner.on_test_end(logs, ctx))
    }
    fn on_predict_begin(&mut self, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
        self.inner.on_predict_begin(logs, ctx)
    }
    fn on_predict_end(&mut self, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
        self.inner.on_predict_end(logs, ctx)
    }
    fn on_predict_batch_begin(
        &mut self,
        batch: usize,
        logs: &Logs,
        ctx: &mut Context<'_>,
    ) -> HookResult {
        self.inner.on_predict_batch_begin(batch, logs, ctx)
    }
    fn on_predict_batch_end(
        &mut self,
        batch: usize,
        logs: &Logs,
        ctx: &mut Context<'_>,
    ) -> HookResult {
        self.inner.on_predict_batch_end(batch, logs, ctx)
    }
    fn on_round_end(&mut self, ctx: &mut Context<'_>) -> HookResult {
        if std::mem::take(&mut self.epoch_round) {
            Self::timed(&mut self.time.epochs, || self.inner.on_round_end(ctx))
        } else {
            self.inner.on_round_end(ctx)
        }
    }
    fn state_key(&self) -> Option<String> {
        self.inner.state_key()
    }
    fn state(&self) -> Option<serde_json::Value> {
        self.inner.state()
    }
    fn restore_state(&mut self, state: &serde_json::Value) -> Result<(), model_checkpoint::Error> {
        self.inner.restore_state(state)
    }
    fn check_state(&self, state: &serde_json::Value) -> Result<(), model_checkpoint::Error> {
        self.inner.check_state(state)
    }
    fn restored_from(
        &mut self,
        file: &model_checkpoint::store::CheckpointFile,
    ) -> Result<(), model_checkpoint::Error> {
        self.inner.restored_from(file)
    }
}

/// One timed 10-epoch fit on digits with the given framework and callback setup, and the
/// time its checkpoint callback took on the training thread.
fn timed_fit(
    data: &Dataset,
    framework: Framework,
    setup: Setup,
    dir: &Path,
) -> Result<(Duration, HookTime), Failure> {
    let mut trainer = framework::trainer(framework, &[64, 64, 10], 0, 1e-3)?;
    let options = FitOptions::new(10).validation_split(0.2).verbose(0);
    // Each fit is a new run in an empty folder, as a user's new run is (in a folder of
    // another run's checkpoints it would warn, and replace them).
    let dir = &dir.join("fit");
    let _ = std::fs::remove_dir_all(dir);
    // The history's folder exists before training, as Keras's CSVLogger needs.
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let template = dir.join(format!(
        "bench-{}.{{epoch:02d}}.safetensors",
        framework.name()
    ));
    let started = Instant::now();
    let hooks = match setup {
        Setup::Plain => {
            trainer.fit(data, &options, &mut [])?;
            HookTime::default()
        }
        Setup::Full | Setup::Weights | Setup::Background | Setup::BackgroundKeeping => {
            let keeping = setup == Setup::BackgroundKeeping;
            let mut cb = ModelCheckpoint::new(template)
                .save_weights_only(setup == Setup::Weights)
                .background(matches!(
                    setup,
                    Setup::Background | Setup::BackgroundKeeping
                ));
            if keeping {
                // What follows each save on storage: a journal row (the journal rewritten
                // and synced), the `last` copy, and from the third save a deletion; and the
                // history, rewritten at each epoch, as `ckpt train --async` keeps them.
                cb = cb.journal(true).save_last(true).keep_last(2);
            }
            let mut timed = Timed {
                inner: &mut cb,
                time: HookTime::default(),
                epoch_round: false,
            };
            let b = if keeping {
                let mut logger =
                    model_checkpoint::CsvLogger::new(dir.join("history.csv")).background(true);
                let mut timed_logger = Timed {
                    inner: &mut logger,
                    time: HookTime::default(),
                    epoch_round: false,
                };
                trainer.fit(data, &options, &mut [&mut timed_logger, &mut timed])?;
                timed_logger.time
            } else {
                trainer.fit(data, &options, &mut [&mut timed])?;
                HookTime::default()
            };
            let a = timed.time;
            HookTime {
                begin: a.begin + b.begin,
                epochs: a.epochs + b.epochs,
                end: a.end + b.end,
                other: a.other + b.other,
            }
        }
    };
    Ok((started.elapsed(), hooks))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    Plain,
    Full,
    Weights,
    Background,
    /// Background, with a journal, `last` and retention, and a history in the background.
    BackgroundKeeping,
}

/// Training speed with and without checkpoints, for candle and burn side by side: every
/// round runs all ten (framework, setup) pairs, in an order that rotates each round.
pub(super) fn train_throughput(runs: u32, dir: &Path) -> Result<serde_json::Value, Failure> {
    let data = Dataset::digits().scaled().shuffled(0);
    let train_samples = (data.len() as f64 * 0.8) as usize;
    let setups = [
        Setup::Plain,
        Setup::Full,
        Setup::Weights,
        Setup::Background,
        Setup::BackgroundKeeping,
    ];
    // burn where this ckpt is built with it (the `burn` feature).
    let frameworks: &[Framework] = if framework::HAS_BURN {
        &[Framework::Candle, Framework::Burn]
    } else {
        &[Framework::Candle]
    };
    let pairs: Vec<(Framework, Setup)> = frameworks
        .iter()
        .flat_map(|&f| setups.iter().map(move |&s| (f, s)))
        .collect();
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); pairs.len()];
    let mut hooks: Vec<Vec<HookTime>> = vec![Vec::new(); pairs.len()];
    for &f in frameworks {
        timed_fit(&data, f, Setup::Plain, dir)?;
    }
    // The order rotates every round, so that no side always follows the same other one.
    for round in 0..runs as usize {
        for k in 0..pairs.len() {
            let i = (round + k) % pairs.len();
            let (f, s) = pairs[i];
            let (time, hook) = timed_fit(&data, f, s, dir)?;
            times[i].push(time);
            hooks[i].push(hook);
        }
    }
    let med: Vec<Duration> = times.into_iter().map(median).collect();
    // Per save (ten a fit): the medians of each kind of hook's time on the training thread.
    let hook_med: Vec<serde_json::Value> = hooks
        .into_iter()
        .map(|h| {
            let per =
                |f: fn(&HookTime) -> Duration, n: u32| secs(median(h.iter().map(f).collect()) / n);
            json!({
                "per_save_s": per(|t| t.epochs, 10),
                "train_begin_s": per(|t| t.begin, 1),
                "train_end_s": per(|t| t.end, 1),
                "other_hooks_s": per(|t| t.other, 1),
            })
        })
        .collect();
    let rate = |d: Duration| (train_samples as f64 * 10.0 / d.as_secs_f64()).round();
    let ratio =
        |a: Duration, b: Duration| ((a.as_secs_f64() / b.as_secs_f64()) * 1e4).round() / 1e4;
    let overhead =
        |a: Duration, b: Duration| ((a.as_secs_f64() / b.as_secs_f64() - 1.0) * 1e4).round() / 1e4;
    let per_framework = |m: &[Duration], h: &[serde_json::Value]| {
        json!({
            "training_thread_full": h[1],
            "training_thread_weights": h[2],
            "training_thread_background_full": h[3],
            "training_thread_background_full_journal_last_keep_last_2_history": h[4],
            "plain_samples_per_s": rate(m[0]),
            "full_checkpoint_every_epoch_samples_per_s": rate(m[1]),
            "weights_checkpoint_every_epoch_samples_per_s": rate(m[2]),
            "background_full_checkpoint_every_epoch_samples_per_s": rate(m[3]),
            "overhead_full": overhead(m[1], m[0]),
            "overhead_weights": overhead(m[2], m[0]),
            "overhead_background_full": overhead(m[3], m[0]),
            "overhead_background_full_journal_last_keep_last_2_history": overhead(m[4], m[0]),
            "plain_s": secs(m[0]),
        })
    };
    let (candle, burn) = med.split_at(setups.len());
    let (candle_hooks, burn_hooks) = hook_med.split_at(setups.len());
    let mut out = json!({
        "bench": "train_throughput", "epochs": 10, "train_samples": train_samples, "runs": runs,
        "model": "MLP 64-64-10, Adam, batch 32",
        "candle": per_framework(candle, candle_hooks),
    });
    if burn.is_empty() {
        out["burn"] = json!("not measured: this ckpt is built without burn (--features burn)");
    } else {
        out["burn"] = per_framework(burn, burn_hooks);
        out["burn_time_over_candle_plain"] = json!(ratio(burn[0], candle[0]));
        out["burn_time_over_candle_full_checkpoint"] = json!(ratio(burn[1], candle[1]));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------

/// A barrier of the threads that stand for ranks in one process.
struct ThreadBarrier(std::sync::Barrier);

impl model_checkpoint::sharded::Barrier for ThreadBarrier {
    fn wait(&self, _name: &str, _timeout: Duration) -> Result<(), model_checkpoint::Error> {
        self.0.wait();
        Ok(())
    }
}

/// Ranks in a sharded run, as threads of one process.
const STALL_RANKS: usize = 4;

/// The training thread's stall for a background sharded save against a synchronous one,
/// with 4 ranks (threads, each holding the whole model as data-parallel ranks do, each
/// writing its quarter of the replicated tensors), committing through a barrier. As for
/// `async_stall_vs_sync`: the hook, and then the wait on the fence before the next
/// optimizer step, after that step's forward and backward.
pub(super) fn sharded_stall_vs_sync(
    runs: u32,
    dir: &Path,
    bytes: u64,
) -> Result<serde_json::Value, Failure> {
    // One barrier per callback: a background callback passes its barriers on its writer
    // thread, so each callback's must pair only with its own.
    let barriers: [Arc<dyn model_checkpoint::sharded::Barrier>; 3] =
        std::array::from_fn(|_| -> Arc<dyn model_checkpoint::sharded::Barrier> {
            Arc::new(ThreadBarrier(std::sync::Barrier::new(STALL_RANKS)))
        });
    let rank_stalls = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..STALL_RANKS)
            .map(|rank| {
                let barriers = barriers.clone();
                scope.spawn(move || stall_rank(rank, runs, dir, bytes, barriers))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| Failure::from("a rank's thread panicked"))?
            })
            .collect::<Result<Vec<_>, Failure>>()
    })?;
    let mut sync = Vec::new();
    let mut background = Vec::new();
    let mut unfenced = Vec::new();
    let mut compute = Vec::new();
    for stalls in rank_stalls {
        sync.extend(stalls.sync);
        background.extend(stalls.background);
        unfenced.extend(stalls.unfenced);
        compute.extend(stalls.compute);
    }
    let (s, b) = (median(sync), median(background));
    Ok(json!({
        "bench": "sharded_stall_vs_sync", "ranks": STALL_RANKS, "runs": runs,
        "model_mib_per_rank": bytes >> 20,
        "model": "candle MLP, 4096-wide layers, SGD, batch 1; every tensor replicated, each rank writing its quarter",
        "sync_stall_s": secs(s), "background_stall_s": secs(b), "ratio": ratio(b, s),
        "background_stall_without_fence_s": secs(median(unfenced)),
        "forward_backward_s": secs(median(compute)),
    }))
}

/// One rank's times in [`sharded_stall_vs_sync`].
struct RankStalls {
    sync: Vec<Duration>,
    background: Vec<Duration>,
    /// Background saves where the loop has no fence: the copy is made in the hook.
    unfenced: Vec<Duration>,
    compute: Vec<Duration>,
}

/// One rank of [`sharded_stall_vs_sync`].
fn stall_rank(
    rank: usize,
    runs: u32,
    dir: &Path,
    bytes: u64,
    barriers: [Arc<dyn model_checkpoint::sharded::Barrier>; 3],
) -> Result<RankStalls, Failure> {
    let ranks = model_checkpoint::sharded::Ranks::new(rank, STALL_RANKS)?;
    let mut big = BigModel::new(bytes)?;
    let fence = model_checkpoint::SnapshotFence::new();
    let logs = Logs::new();
    let [sync_barrier, background_barrier, unfenced_barrier] = barriers;
    let callback = |name: &str, barrier, background| {
        ModelCheckpoint::new(dir.join(name).join("e{epoch:03d}"))
            .save_weights_only(true)
            .sharded(ranks)
            .with_run_id("be9c")
            .shard_barrier(barrier)
            .background(background)
    };
    let mut sync = callback("sync", sync_barrier, false);
    let mut background = callback("background", background_barrier, true);
    let mut unfenced = callback("unfenced", unfenced_barrier, true);
    for cb in [&mut sync, &mut background, &mut unfenced] {
        let mut ctx = Context::new(&big.trainer_model).with_fence(&fence);
        cb.on_train_begin(&logs, &mut ctx)?;
    }
    let mut out = RankStalls {
        sync: Vec::new(),
        background: Vec::new(),
        unfenced: Vec::new(),
        compute: Vec::new(),
    };
    for epoch in 0..runs as usize {
        for (cb, stalls, fenced) in [
            (&mut sync, &mut out.sync, true),
            (&mut background, &mut out.background, true),
            (&mut unfenced, &mut out.unfenced, false),
        ] {
            let t = Instant::now();
            {
                let ctx = Context::new(&big.trainer_model);
                let mut ctx = if fenced { ctx.with_fence(&fence) } else { ctx };
                cb.on_epoch_end(epoch, &logs, &mut ctx)?;
            }
            let hook = t.elapsed();
            let c = Instant::now();
            let grads = big.compute()?;
            out.compute.push(c.elapsed());
            let t = Instant::now();
            fence.wait();
            stalls.push(hook + t.elapsed());
            big.apply(&grads)?;
            // Not timed: the saves are compared one at a time.
            cb.flush()?;
        }
    }
    for cb in [&mut sync, &mut background, &mut unfenced] {
        let mut ctx = Context::new(&big.trainer_model).with_fence(&fence);
        cb.on_train_end(&logs, &mut ctx)?;
    }
    Ok(out)
}
