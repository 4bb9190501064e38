//! Save triggers beyond Keras's schedule (every n steps, every n epochs, every interval of
//! wall-clock time) and saving on SIGTERM or SIGINT. All are off by default, so that the
//! callback behaves exactly as Keras's unless asked otherwise; none touches Keras's
//! counters.

use std::time::{Duration, Instant};

/// The settings of the triggers beyond Keras, and their runtime state.
#[derive(Debug, Default)]
pub(super) struct Triggers {
    pub every_n_steps: Option<u64>,
    pub every_n_epochs: Option<u64>,
    pub every: Option<Duration>,
    pub save_on_interrupt: bool,
    /// The host delivers the signals (`request_interrupt`): no handlers are installed.
    pub signals_from_host: bool,
    /// This callback holds the signals (`interrupt::hold_signals`), from `on_train_begin`.
    pub holds_signals: bool,
    pub last_trigger_time: Option<Instant>,
    /// The global step of the last save by the every-n-steps trigger (carried in the state).
    pub last_trigger_step: Option<u64>,
    pub interrupted: Option<&'static str>,
    /// The signals this callback has acted on, or that came before it began to look.
    pub seen: super::super::interrupt::Seen,
}

impl Triggers {
    /// Whether any trigger needs the batch hook.
    pub fn acts_on_batches(&self) -> bool {
        self.every_n_steps.is_some() || self.every.is_some() || self.save_on_interrupt
    }

    /// Whether a step or time trigger is due after `global_step` steps.
    pub fn due(&self, global_step: u64) -> bool {
        let by_steps = self
            .every_n_steps
            .is_some_and(|n| global_step > 0 && global_step.is_multiple_of(n));
        let by_time = match (self.every, self.last_trigger_time) {
            (Some(interval), Some(since)) => since.elapsed() >= interval,
            _ => false,
        };
        by_steps || by_time
    }

    /// Whether the every-n-epochs trigger is due at the end of `epoch` (0-based).
    pub fn epoch_due(&self, epoch: i64) -> bool {
        self.every_n_epochs
            .is_some_and(|n| u64::try_from(epoch + 1).is_ok_and(|e| e.is_multiple_of(n)))
    }
}
