//! Options beyond Keras: retention, the `last` link, more triggers, saving on SIGTERM and
//! SIGINT, and not overwriting. All are off by default, so that the callback behaves exactly
//! as Keras's unless asked otherwise.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::ModelCheckpoint;
use crate::policy::Retention;

/// The beyond-Keras settings and their runtime state.
#[derive(Debug)]
pub(super) struct Extras {
    pub retention: Retention,
    pub last: Last,
    pub overwrite: bool,
    pub every_n_steps: Option<u64>,
    pub every_n_epochs: Option<u64>,
    pub every: Option<Duration>,
    pub save_on_interrupt: bool,
    pub last_trigger_time: Option<Instant>,
    pub interrupted: Option<&'static str>,
}

/// Where the `last` link goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Last {
    Off,
    /// `last.safetensors` in the template's folder.
    Beside,
    /// A path of the caller's choosing.
    At(PathBuf),
}

impl Default for Extras {
    fn default() -> Self {
        Extras {
            retention: Retention::default(),
            last: Last::Off,
            overwrite: true,
            every_n_steps: None,
            every_n_epochs: None,
            every: None,
            save_on_interrupt: false,
            last_trigger_time: None,
            interrupted: None,
        }
    }
}

impl Extras {
    /// Whether any option needs the batch hook.
    pub fn acts_on_batches(&self) -> bool {
        self.every_n_steps.is_some() || self.every.is_some() || self.save_on_interrupt
    }

    /// Whether a step or time trigger is due after `global_step` steps.
    pub fn trigger_due(&self, global_step: u64) -> bool {
        let by_steps = self
            .every_n_steps
            .is_some_and(|n| global_step > 0 && global_step.is_multiple_of(n));
        let by_time = match (self.every, self.last_trigger_time) {
            (Some(interval), Some(since)) => since.elapsed() >= interval,
            _ => false,
        };
        by_steps || by_time
    }
}

impl ModelCheckpoint {
    /// Keep only the `k` best checkpoints by the monitored value, besides the newest
    /// (Lightning's `save_top_k`). Files go only after a newer save is durable; NaN never
    /// ranks; ties keep the older. Default: keep everything, as Keras does.
    pub fn keep_best(mut self, k: usize) -> Self {
        self.extras.retention.keep_best = Some(k);
        self
    }

    /// Keep the `n` newest checkpoints, besides the best. Default: keep everything.
    pub fn keep_last(mut self, n: usize) -> Self {
        self.extras.retention.keep_last = Some(n);
        self
    }

    /// Keep every checkpoint saved in an epoch that is a multiple of `m` (1-based), whatever
    /// the other rules say. Default: off.
    pub fn keep_every_epochs(mut self, m: u64) -> Self {
        self.extras.retention.keep_every_epochs = Some(m);
        self
    }

    /// Keep `last.safetensors` in the template's folder pointing at the newest complete
    /// checkpoint: a hard link replaced atomically after every save (a copy where links are
    /// impossible). Retention never removes it. Default: off.
    pub fn save_last(mut self, yes: bool) -> Self {
        self.extras.last = if yes { Last::Beside } else { Last::Off };
        self
    }

    /// Like [`ModelCheckpoint::save_last`], at `path`.
    pub fn save_last_as(mut self, path: impl Into<PathBuf>) -> Self {
        self.extras.last = Last::At(path.into());
        self
    }

    /// Replace a file whose name is taken (Keras's behaviour), or, with `false`, save as
    /// `NAME-v1.EXT`, `NAME-v2.EXT` … (Lightning's). Default: `true`.
    pub fn overwrite(mut self, yes: bool) -> Self {
        self.extras.overwrite = yes;
        self
    }

    /// Also attempt a save every `n` optimizer steps (beyond Keras's `save_freq`, which it
    /// leaves alone). Default: off.
    pub fn every_n_steps(mut self, n: u64) -> Self {
        self.extras.every_n_steps = Some(n.max(1));
        self
    }

    /// Also attempt a save at the end of every `n`-th epoch (1-based). Default: off.
    pub fn every_n_epochs(mut self, n: u64) -> Self {
        self.extras.every_n_epochs = Some(n.max(1));
        self
    }

    /// Also attempt a save at the first batch end after `interval` of wall-clock time since
    /// training began or since the last save. Default: off.
    pub fn every(mut self, interval: Duration) -> Self {
        self.extras.every = Some(interval);
        self
    }

    /// On SIGTERM or SIGINT (Unix), finish the current step, save a full checkpoint (to the
    /// `last` path, else `interrupted.safetensors` in the template's folder), wait until it
    /// is durable, and stop training with [`crate::Control::Interrupt`]. A second SIGINT
    /// ends the process at once. Default: off.
    pub fn save_on_interrupt(mut self, yes: bool) -> Self {
        self.extras.save_on_interrupt = yes;
        self
    }

    /// The signal that stopped training, if one did.
    pub fn interrupted(&self) -> Option<&'static str> {
        self.extras.interrupted
    }

    /// The `last` link's path, if on.
    pub fn last_path(&self) -> Option<PathBuf> {
        match &self.extras.last {
            Last::Off => None,
            Last::Beside => Some(self.static_dir().join("last.safetensors")),
            Last::At(p) => Some(p.clone()),
        }
    }
}
