//! The `Callback` trait with Keras's hook names, the context a hook receives, and a list
//! that calls many callbacks in order.

mod csv_logger;
mod fence;
mod list;

pub use csv_logger::CsvLogger;
pub use fence::{FenceGuard, SnapshotFence};
pub use list::CallbackList;

use crate::model::Checkpointable;
use crate::{Error, Logs};

/// What training should do after a hook.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    #[default]
    Continue,
    /// Finish the current step and stop (Keras's `model.stop_training = True`): the epoch
    /// still ends (validation, `on_epoch_end`).
    StopTraining,
    /// Stop now (beyond Keras): a signal asked training to end and a resumable checkpoint
    /// was saved; the rest of the epoch, validation and `on_epoch_end` are skipped, and
    /// `on_train_end` is still called.
    Interrupt,
}

impl Control {
    /// The stronger request: `Interrupt` over `StopTraining` over `Continue`.
    pub fn and(self, other: Control) -> Control {
        let rank = |c: Control| match c {
            Control::Continue => 0,
            Control::StopTraining => 1,
            Control::Interrupt => 2,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

/// What a hook can reach besides its arguments: the model (to save it), where training
/// stands, and the other callbacks of the list (whose state a full checkpoint keeps).
pub struct Context<'a> {
    model: Option<&'a dyn Checkpointable>,
    /// Optimizer steps taken since training began (across `fit` calls and resumes).
    pub global_step: u64,
    peers: [&'a [Box<dyn Callback + 'a>]; 2],
    fence: Option<&'a SnapshotFence>,
    /// Set by [`CallbackList`] while it calls one hook on every callback: saves wait for
    /// [`Callback::on_round_end`].
    in_round: bool,
}

impl<'a> Context<'a> {
    /// A context giving hooks access to `model`.
    pub fn new(model: &'a dyn Checkpointable) -> Self {
        Context {
            model: Some(model),
            global_step: 0,
            peers: [&[], &[]],
            fence: None,
            in_round: false,
        }
    }

    /// A context without a model: saving callbacks fail with [`Error::NoModel`] when a save
    /// is due (as Keras fails when `set_model` was never called).
    pub fn without_model() -> Self {
        Context {
            model: None,
            global_step: 0,
            peers: [&[], &[]],
            fence: None,
            in_round: false,
        }
    }

    /// Gives background saves a fence, so that they may copy while training goes on. The
    /// caller must call [`SnapshotFence::wait`] before changing any weight or optimizer
    /// tensor.
    pub fn with_fence(mut self, fence: &'a SnapshotFence) -> Self {
        self.fence = Some(fence);
        self
    }

    /// The training loop's snapshot fence, if it has one.
    pub fn fence(&self) -> Option<&'a SnapshotFence> {
        self.fence
    }

    /// Whether a [`CallbackList`] is calling the current hook on every callback, and will
    /// call [`Callback::on_round_end`] once all have had it.
    pub fn in_round(&self) -> bool {
        self.in_round
    }

    /// The saved state of the other callbacks in the list, by state key: what a full
    /// checkpoint records so that resuming restores them too.
    pub fn peer_states(&self) -> Vec<(String, serde_json::Value)> {
        self.peers
            .iter()
            .flat_map(|group| group.iter())
            .filter_map(|cb| Some((cb.state_key()?, cb.state()?)))
            .collect()
    }

    /// Gives the hook `peers`: the other callbacks of the training loop, whose states a
    /// full checkpoint records beside the hook's own (what [`CallbackList`] gives each of its
    /// callbacks; a host that calls callbacks one by one, as Python's Keras does, passes
    /// them here).
    pub fn with_peers(mut self, peers: &'a [Box<dyn Callback + 'a>]) -> Self {
        self.peers = [peers, &[]];
        self
    }

    /// Sets [`Context::global_step`].
    pub fn with_global_step(mut self, step: u64) -> Self {
        self.global_step = step;
        self
    }

    /// The model.
    ///
    /// # Errors
    ///
    /// [`Error::NoModel`] if the context has none.
    pub fn model(&self) -> Result<&'a dyn Checkpointable, Error> {
        self.model.ok_or(Error::NoModel)
    }
}

/// Result of a hook.
pub type HookResult = Result<Control, Error>;

/// A training callback, with Keras's hook names.
///
/// Every hook has a no-op default, so a callback implements only what it needs. Indices are
/// 0-based, as Keras passes them. `logs` holds:
///
/// - `on_train_batch_end`: the running metrics of the current epoch (`loss`, `accuracy` …);
/// - `on_epoch_end`: the epoch's metrics, plus `val_`-prefixed validation metrics when
///   validation data is given;
/// - `on_train_end`: the last epoch's logs;
/// - the `*_begin` hooks: empty logs.
///
/// A hook returning [`Control::StopTraining`] ends `fit` after the current step (the other
/// callbacks still get that hook). A hook returning `Err` stops `fit` at once with that
/// error: the remaining callbacks do not get the hook, and `on_train_end` is not called, as
/// in Keras, where an exception in a callback propagates out of `fit`.
///
/// ```
/// use model_checkpoint::{Callback, Context, Control, Error, Logs};
///
/// /// Stops training once the loss is low enough.
/// struct StopBelow(f64);
///
/// impl Callback for StopBelow {
///     fn on_epoch_end(&mut self, _epoch: usize, logs: &Logs, _ctx: &mut Context<'_>) -> Result<Control, Error> {
///         let low = logs.get("loss").and_then(|v| v.as_f64()).is_some_and(|l| l < self.0);
///         Ok(if low { Control::StopTraining } else { Control::Continue })
///     }
/// }
///
/// let mut cb = StopBelow(0.1);
/// let logs = Logs::from([("loss", 0.05)]);
/// assert_eq!(cb.on_epoch_end(0, &logs, &mut Context::without_model())?, Control::StopTraining);
/// # Ok::<(), Error>(())
/// ```
#[allow(unused_variables)]
pub trait Callback {
    /// Before the first epoch of a `fit`.
    fn on_train_begin(&mut self, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
        Ok(Control::Continue)
    }
    /// After the last epoch of a `fit` (not called when a hook failed).
    fn on_train_end(&mut self, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
        Ok(Control::Continue)
    }
    /// At the start of epoch `epoch`.
    fn on_epoch_begin(&mut self, epoch: usize, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
        Ok(Control::Continue)
    }
    /// At the end of epoch `epoch`, after validation.
    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
        Ok(Control::Continue)
    }
    /// Before training batch `batch` of the current epoch.
    fn on_train_batch_begin(
        &mut self,
        batch: usize,
        logs: &Logs,
        ctx: &mut Context<'_>,
    ) -> HookResult {
        Ok(Control::Continue)
    }
    /// After training batch `batch` of the current epoch, with the epoch's running metrics.
    fn on_train_batch_end(
        &mut self,
        batch: usize,
        logs: &Logs,
        ctx: &mut Context<'_>,
    ) -> HookResult {
        Ok(Control::Continue)
    }
    /// Before evaluation (validation included).
    fn on_test_begin(&mut self, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
        Ok(Control::Continue)
    }
    /// After evaluation.
    fn on_test_end(&mut self, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
        Ok(Control::Continue)
    }
    /// Before evaluation batch `batch`.
    fn on_test_batch_begin(
        &mut self,
        batch: usize,
        logs: &Logs,
        ctx: &mut Context<'_>,
    ) -> HookResult {
        Ok(Control::Continue)
    }
    /// After evaluation batch `batch`.
    fn on_test_batch_end(
        &mut self,
        batch: usize,
        logs: &Logs,
        ctx: &mut Context<'_>,
    ) -> HookResult {
        Ok(Control::Continue)
    }
    /// Before prediction.
    fn on_predict_begin(&mut self, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
        Ok(Control::Continue)
    }
    /// After prediction.
    fn on_predict_end(&mut self, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
        Ok(Control::Continue)
    }
    /// Before prediction batch `batch`.
    fn on_predict_batch_begin(
        &mut self,
        batch: usize,
        logs: &Logs,
        ctx: &mut Context<'_>,
    ) -> HookResult {
        Ok(Control::Continue)
    }
    /// After prediction batch `batch`.
    fn on_predict_batch_end(
        &mut self,
        batch: usize,
        logs: &Logs,
        ctx: &mut Context<'_>,
    ) -> HookResult {
        Ok(Control::Continue)
    }

    /// Called by a [`CallbackList`] once every callback has had the current hook (when
    /// none failed), with the others as peers: what a callback deferred until all had seen
    /// the hook happens now. `ModelCheckpoint` writes its saves here, so that a full
    /// checkpoint holds every callback's state as of the end of the round, whatever the
    /// order of the list. Called directly, outside a list, a hook does everything itself.
    fn on_round_end(&mut self, ctx: &mut Context<'_>) -> HookResult {
        Ok(Control::Continue)
    }

    /// The name this callback's state is kept under in full checkpoints; `None` (the
    /// default) keeps no state.
    fn state_key(&self) -> Option<String> {
        None
    }
    /// The callback's own state, for full checkpoints and resume.
    fn state(&self) -> Option<serde_json::Value> {
        None
    }
    /// Restores what [`Callback::state`] returned.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`]-like failures when the state cannot be read.
    fn restore_state(&mut self, state: &serde_json::Value) -> Result<(), Error> {
        Ok(())
    }

    /// Whether [`Callback::restore_state`] would take `state`, changing nothing: a restore
    /// asks every callback before it changes the model, so that a refusal leaves the model
    /// and every callback as they were. Default: yes.
    ///
    /// # Errors
    ///
    /// The refusal `restore_state` would give.
    fn check_state(&self, state: &serde_json::Value) -> Result<(), Error> {
        let _ = state;
        Ok(())
    }

    /// Called after [`Callback::restore_state`] with the checkpoint the state came from, so
    /// that a callback can check what it restored against the file itself (ModelCheckpoint
    /// confirms that the run it resumes really wrote this file). Default: nothing.
    ///
    /// # Errors
    ///
    /// The callback's refusal.
    fn restored_from(&mut self, file: &crate::store::CheckpointFile) -> Result<(), Error> {
        let _ = file;
        Ok(())
    }
}

/// Forwards every hook of a wrapper type to the callback it holds.
macro_rules! forward_hooks {
    ($(#[$doc:meta])* $wrapper:ty) => {
        $(#[$doc])*
        impl<C: Callback + ?Sized> Callback for $wrapper {
            fn on_train_begin(&mut self, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
                (**self).on_train_begin(logs, ctx)
            }
            fn on_train_end(&mut self, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
                (**self).on_train_end(logs, ctx)
            }
            fn on_epoch_begin(&mut self, epoch: usize, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
                (**self).on_epoch_begin(epoch, logs, ctx)
            }
            fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
                (**self).on_epoch_end(epoch, logs, ctx)
            }
            fn on_train_batch_begin(&mut self, batch: usize, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
                (**self).on_train_batch_begin(batch, logs, ctx)
            }
            fn on_train_batch_end(&mut self, batch: usize, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
                (**self).on_train_batch_end(batch, logs, ctx)
            }
            fn on_test_begin(&mut self, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
                (**self).on_test_begin(logs, ctx)
            }
            fn on_test_end(&mut self, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
                (**self).on_test_end(logs, ctx)
            }
            fn on_test_batch_begin(&mut self, batch: usize, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
                (**self).on_test_batch_begin(batch, logs, ctx)
            }
            fn on_test_batch_end(&mut self, batch: usize, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
                (**self).on_test_batch_end(batch, logs, ctx)
            }
            fn on_predict_begin(&mut self, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
                (**self).on_predict_begin(logs, ctx)
            }
            fn on_predict_end(&mut self, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
                (**self).on_predict_end(logs, ctx)
            }
            fn on_predict_batch_begin(&mut self, batch: usize, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
                (**self).on_predict_batch_begin(batch, logs, ctx)
            }
            fn on_predict_batch_end(&mut self, batch: usize, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
                (**self).on_predict_batch_end(batch, logs, ctx)
            }
            fn on_round_end(&mut self, ctx: &mut Context<'_>) -> HookResult {
                (**self).on_round_end(ctx)
            }
            fn state_key(&self) -> Option<String> {
                (**self).state_key()
            }
            fn state(&self) -> Option<serde_json::Value> {
                (**self).state()
            }
            fn restore_state(&mut self, state: &serde_json::Value) -> Result<(), Error> {
                (**self).restore_state(state)
            }
            fn check_state(&self, state: &serde_json::Value) -> Result<(), Error> {
                (**self).check_state(state)
            }
            fn restored_from(
                &mut self,
                file: &crate::store::CheckpointFile,
            ) -> Result<(), Error> {
                (**self).restored_from(file)
            }
        }
    };
}

forward_hooks!(
    /// A borrowed callback is a callback, so that `fit` can take `&mut [&mut dyn Callback]`
    /// and leave the callbacks with their owner (to read `best()` afterwards, say).
    &mut C
);
forward_hooks!(
    /// A boxed callback is a callback.
    Box<C>
);
