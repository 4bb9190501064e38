//! Keras's decisions, and nothing else: whether a save attempt is due, the name it gets, and
//! whether the monitored value improved. This is the part of `ModelCheckpoint` that the
//! recorded Keras traces check; it holds Keras's arguments and Keras's state, and touches no
//! storage (the saving engine, `super::engine`, does that).

use std::collections::BTreeMap;

use super::keras::{KerasVersion, Rules};
use crate::policy::{Direction, Mode, SaveFreq, SaveSchedule, Verdict};
use crate::store::Kind;
use crate::template::{self, FormatError};
use crate::{Error, Logs, Value};

/// Keras's arguments that decide, and the state they decide from.
#[derive(Debug)]
pub(crate) struct Decisions {
    /// The Keras whose rules decide.
    pub rules: &'static dyn Rules,
    pub monitor: String,
    pub mode: Mode,
    /// `mode` resolved for `monitor`, as far as it can be now: what retention ranks files
    /// by. Minimise while a lazy Keras cannot tell yet.
    pub direction: Direction,
    /// Keras's `monitor_op`: the direction improvements are judged by, `None` until a lazy
    /// Keras (Keras 3) chooses it at an epoch end.
    pub monitor_op: Option<Direction>,
    /// The compiled metrics whose direction is known, by name (Keras 3's `mode="auto"`).
    pub metrics: BTreeMap<String, Direction>,
    /// The backend gives a Python float as a float64 tensor (Keras 3 compares in it).
    pub float64_scalars: bool,
    pub save_best_only: bool,
    pub save_weights_only: bool,
    pub save_freq: SaveFreq,
    pub period: i64,
    pub threshold: Option<Value>,
    /// The best monitored value so far (or the threshold, or ±inf).
    pub best: Value,
    pub schedule: SaveSchedule,
    /// The epoch `on_epoch_begin` last announced.
    pub current_epoch: Option<i64>,
}

impl Default for Decisions {
    /// Keras's defaults: monitor `val_loss`, mode `auto`, every epoch, no threshold.
    fn default() -> Self {
        let mut decisions = Decisions {
            rules: KerasVersion::default().rules(),
            monitor: "val_loss".to_owned(),
            mode: Mode::Auto,
            direction: Direction::Minimize,
            monitor_op: Some(Direction::Minimize),
            metrics: BTreeMap::new(),
            float64_scalars: false,
            save_best_only: false,
            save_weights_only: false,
            save_freq: SaveFreq::Epoch,
            period: 1,
            threshold: None,
            best: Value::Float(f64::INFINITY),
            schedule: SaveSchedule::default(),
            current_epoch: None,
        };
        decisions.reset_best();
        decisions
    }
}

impl Decisions {
    /// Recomputes the direction and the starting best from mode, monitor and threshold, as
    /// Keras's constructor does. A threshold is kept as given, never replaced by ±inf. A
    /// lazy Keras leaves `monitor_op` unset until [`Decisions::choose_monitor_op`].
    pub fn reset_best(&mut self) {
        let chosen = self
            .rules
            .direction(self.mode, &self.monitor, &self.metrics);
        self.direction = chosen.as_ref().map_or(Direction::Minimize, |d| *d);
        self.monitor_op = match chosen {
            Ok(d) if !self.rules.lazy_monitor_op() => Some(d),
            _ => None,
        };
        self.best = self.rules.initial_best(self.direction, self.threshold);
    }

    /// Keras 3's `on_epoch_end` start: `if self.monitor_op is None: self._set_monitor_op()`,
    /// failing (every epoch end) while the direction cannot be told.
    pub fn choose_monitor_op(&mut self) -> Result<(), Error> {
        if self.monitor_op.is_none() {
            let direction = self
                .rules
                .direction(self.mode, &self.monitor, &self.metrics)?;
            self.monitor_op = Some(direction);
            self.direction = direction;
        }
        Ok(())
    }

    /// What a save writes: the weights, or a full checkpoint (Keras's `save_weights_only`).
    pub fn kind(&self) -> Kind {
        if self.save_weights_only {
            Kind::Weights
        } else {
            Kind::Full
        }
    }

    /// Whether Keras's batch-level schedule wants an attempt after `batch` (and counts it).
    pub fn batch_due(&mut self, batch: i64) -> bool {
        self.save_freq != SaveFreq::Epoch && self.schedule.batch_due(batch, self.save_freq)
    }

    /// Whether Keras's schedule lets an attempt go ahead (`period`), resetting its counter
    /// as Keras does before formatting.
    pub fn attempt_due(&mut self) -> bool {
        let period = if self.rules.has_period() {
            self.period
        } else {
            1
        };
        self.schedule.attempt_due(self.save_freq, period)
    }

    /// Keras's `_get_file_path`: `filepath.format(epoch=epoch + 1, batch=batch + 1, **logs)`,
    /// leaving `batch` out at epoch level or when the logs carry their own.
    pub fn file_path(
        template: &str,
        epoch: i64,
        batch: Option<i64>,
        logs: &Logs,
    ) -> Result<String, Error> {
        if logs.contains("epoch") {
            return Err(Error::EpochInLogs);
        }
        let mut kwargs: Vec<(&str, Value)> = Vec::with_capacity(logs.len() + 2);
        kwargs.push(("epoch", Value::Int(epoch + 1)));
        if let Some(b) = batch.filter(|_| !logs.contains("batch")) {
            kwargs.push(("batch", Value::Int(b + 1)));
        }
        kwargs.extend(logs.iter());
        template::format(template, &kwargs).map_err(|source| match source {
            FormatError::MissingKey { key } => Error::MissingTemplateKey {
                template: template.to_owned(),
                key,
            },
            source => Error::Template {
                template: template.to_owned(),
                source,
            },
        })
    }

    /// Keras's verdict on the logs of a due attempt. On an improvement `best` moves now,
    /// before the save runs, as in Keras (a failed save still moves it).
    pub fn judge(&mut self, logs: &Logs) -> Result<Verdict, Error> {
        let verdict = self.rules.judge(
            self.save_best_only,
            self.monitor_op,
            logs.get(&self.monitor),
            self.best,
            self.float64_scalars,
        )?;
        if let Verdict::Improved { to, .. } = verdict {
            self.best = to;
        }
        Ok(verdict)
    }
}
