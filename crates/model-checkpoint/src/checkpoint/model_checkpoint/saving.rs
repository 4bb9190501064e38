//! How a due save runs: Keras's `_save_model` order of effects, joining Keras's decisions
//! (`Decisions`) to the saving engine (`Engine`), and the save on a signal.

use std::io::Write;
use std::path::PathBuf;

use super::super::decisions::Decisions;
use super::super::engine::{check_length, Job};
use super::{compose, ModelCheckpoint, Output};
use crate::callback::Context;
use crate::policy::Verdict;
use crate::store::{Commit, Kind};
use crate::{Error, Logs};

/// Why a save is attempted.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Reason {
    /// Keras's schedule (`save_freq`, `period`).
    Keras,
    /// A trigger beyond Keras (steps, epochs, seconds): Keras's counters stay untouched.
    Trigger,
}

impl ModelCheckpoint {
    pub(super) fn say(&mut self, message: &str) {
        // In a multi-process run every rank decides alike; rank 0 speaks for all.
        if self.verbose <= 0 || self.engine.config.ranks.is_some_and(|r| r.rank != 0) {
            return;
        }
        let line = format!("{message}\n");
        // Like Python's print to a closed pipe, a failing console must not fail training.
        let _ = match &mut self.output {
            Output::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(line.as_bytes()).and_then(|()| out.flush())
            }
            Output::Writer(w) => w.write_all(line.as_bytes()).and_then(|()| w.flush()),
        };
    }

    /// Keras's `_save_model`, in Keras's order of effects (KERAS-SPEC.md §19): reset the period
    /// counter, format (possibly failing), create the folder, then check the monitor, print,
    /// update `best`, save. Returns whether an attempt was due.
    ///
    /// This crate's own refusals of a save (a reserved name, a model that cannot give a full
    /// checkpoint) come before Keras's message, so that nothing is printed for a save that
    /// cannot happen; limits the file system would impose (a name too long) apply only when
    /// a file is about to be created, where Keras's save would meet them.
    pub(super) fn save_model(
        &mut self,
        epoch: i64,
        batch: Option<i64>,
        logs: &Logs,
        ctx: &Context<'_>,
        reason: Reason,
    ) -> Result<bool, Error> {
        if reason == Reason::Keras && !self.decisions.attempt_due() {
            return Ok(false);
        }
        let filepath = Decisions::file_path(&self.engine.config.template, epoch, batch, logs)?;
        // Keras fails on a missing model here: after formatting, before making folders.
        ctx.model()?;
        self.engine.ensure_run_id();
        let rules = self.decisions.rules;
        // tf.keras creates the folder before looking at the monitor, so skipped epochs can
        // leave empty folders (trace missing_monitor_dir_created).
        if rules.folder_before_monitor() {
            self.engine.prepare_folder(&filepath)?;
        }
        let monitor = self.decisions.monitor.clone();
        let mut verdict = self.decisions.judge(logs);
        match verdict {
            Verdict::MonitorMissing => {
                log::warn!(target: "model_checkpoint", "{}", rules.monitor_missing(&monitor));
                if !rules.missing_monitor_saves() {
                    return Ok(true);
                }
                verdict = Verdict::Save;
            }
            Verdict::NotImproved { best } => {
                self.say(&rules.not_improved(epoch, &monitor, best));
                return Ok(true);
            }
            Verdict::Improved { .. } | Verdict::Save => {}
        }
        if !rules.folder_before_monitor() {
            self.engine.prepare_folder(&filepath)?;
        }
        self.engine.check_reserved(&filepath)?;
        let kind = self.decisions.kind();
        self.engine.check_model(ctx, kind)?;
        // With versions, the name is looked up before the message that shows it.
        let path = if self.engine.config.overwrite {
            self.engine.normalize(&filepath)
        } else {
            check_length(&filepath)?;
            self.engine.free_path(self.engine.normalize(&filepath))?
        };
        let shown = if self.engine.config.overwrite {
            filepath.clone()
        } else {
            path.display().to_string()
        };
        match verdict {
            Verdict::Improved { from, to } => {
                self.say(&rules.improved(epoch, &monitor, from, to, &shown));
            }
            _ => self.say(&rules.saving(epoch, &shown)),
        }
        check_length(&filepath)?;
        // With versions, a commit never replaces: a writer that lost a race for the name
        // (one that ignored the folder's lock) fails rather than overwrite the winner's file.
        let commit = if self.engine.config.overwrite {
            Commit::Replace
        } else {
            Commit::CreateNew
        };
        self.write(path, kind, commit, (epoch, batch), logs, ctx, false)?;
        Ok(true)
    }

    /// Plans a due save with the engine, and writes it now unless a list of callbacks is
    /// calling this hook on every callback: then it is written once all have had the hook
    /// ([`crate::Callback::on_round_end`]), so that a full checkpoint holds every callback's state
    /// as of the end of the round, whatever the order of the list.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        path: PathBuf,
        kind: Kind,
        commit: Commit,
        (epoch, batch): (i64, Option<i64>),
        logs: &Logs,
        ctx: &Context<'_>,
        interrupt: bool,
    ) -> Result<(), Error> {
        self.engine.plan(Job {
            path,
            kind,
            commit,
            epoch,
            batch,
            logs: logs.clone(),
            monitor: self.decisions.monitor.clone(),
            direction: self.decisions.direction,
            global_step: ctx.global_step,
            interrupt,
        });
        if ctx.in_round() {
            return Ok(());
        }
        self.run_planned(ctx)
    }

    /// Writes the saves planned in this round (see [`ModelCheckpoint::write`]).
    pub(super) fn run_planned(&mut self, ctx: &Context<'_>) -> Result<(), Error> {
        if !self.engine.has_planned() {
            return Ok(());
        }
        let key = self.key();
        let ModelCheckpoint {
            decisions,
            engine,
            triggers,
            ..
        } = self;
        let state_of = |saved| serde_json::to_value(compose(decisions, triggers, saved)).ok();
        engine.run_planned(ctx, &key, &state_of)
    }

    /// Saves a full checkpoint because a signal asked training to stop, and waits until it
    /// is durable (beyond Keras). It goes to the run's interrupt file, which `latest` takes
    /// when it is the newest checkpoint of the run, and which a run that later completes
    /// removes.
    pub(super) fn save_interrupted(
        &mut self,
        signal: &'static str,
        epoch: i64,
        batch: Option<i64>,
        logs: &Logs,
        ctx: &Context<'_>,
    ) -> Result<(), Error> {
        self.engine.check_model(ctx, Kind::Full)?;
        let dir = self.engine.folder();
        self.engine
            .config
            .storage
            .prepare_dir(&dir.to_string_lossy())?;
        self.engine.ensure_lock()?;
        let path = self.engine.interrupt_path()?;
        self.say(&format!(
            "\nEpoch {}: {signal} received, saving a full checkpoint to {}",
            epoch + 1,
            path.display()
        ));
        self.triggers.interrupted = Some(signal);
        // The run's own interrupt file, which `interrupt_path` checked at the gate.
        self.write(
            path,
            Kind::Full,
            Commit::Replace,
            (epoch, batch),
            logs,
            ctx,
            true,
        )
    }
}
