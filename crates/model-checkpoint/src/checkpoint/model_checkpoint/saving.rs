//! How a due save runs: Keras's `_save_model` order of effects, joining Keras's decisions
//! (`Decisions`) to the saving engine (`Engine`), and the save on a signal.

use std::io::Write;

use super::super::decisions::Decisions;
use super::super::engine::{check_length, Job};
use super::{compose, ModelCheckpoint, Output};
use crate::callback::Context;
use crate::policy::Verdict;
use crate::store::{Commit, Kind, Name};
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
    /// update `best`, save. Returns whether an attempt was due. Where the Keras being
    /// imitated orders things otherwise, its rules say so: Keras 3 makes the folder and
    /// meets a missing model only after its message, and prints a second line once saved.
    ///
    /// `logs` is `None` for a hook called without logs (Python's `logs=None`): tf.keras 2
    /// reads that as empty logs, Keras 3 fails formatting the path.
    ///
    /// This crate's own refusals of a save (a reserved name, a model that cannot give a full
    /// checkpoint) come before Keras's message, so that nothing is printed for a save that
    /// cannot happen; limits the file system would impose (a name too long) apply only when
    /// a file is about to be created, where Keras's save would meet them.
    pub(super) fn save_model(
        &mut self,
        epoch: i64,
        batch: Option<i64>,
        logs: Option<&Logs>,
        ctx: &Context<'_>,
        reason: Reason,
    ) -> Result<bool, Error> {
        if reason == Reason::Keras && !self.decisions.attempt_due() {
            return Ok(false);
        }
        let rules = self.decisions.rules;
        let empty = Logs::new();
        let logs = match logs {
            Some(logs) => logs,
            None => match rules.no_logs(batch) {
                Some(err) => return Err(err),
                None => &empty,
            },
        };
        let filepath = Decisions::file_path(self.engine.config.template(), epoch, batch, logs)?;
        let name = Name::new(&filepath)?;
        let makes_folder = |dir: &Name| rules.makes_folder(dir);
        // tf.keras fails on a missing model here: after formatting, before making folders.
        let model_first = rules.model_before_message();
        if model_first {
            ctx.model()?;
        }
        self.engine.ensure_run_id();
        // tf.keras creates the folder before looking at the monitor, so skipped epochs can
        // leave empty folders (trace missing_monitor_dir_created).
        if rules.folder_before_monitor() {
            self.engine.prepare_folder(&name, makes_folder)?;
        }
        let monitor = self.decisions.monitor.clone();
        let verdict = self.decisions.judge(logs)?;
        let saves = match verdict {
            Verdict::MonitorMissing => rules.missing_monitor_saves(),
            Verdict::NotImproved { .. } => false,
            Verdict::Improved { .. } | Verdict::Save => true,
        };
        if rules.folder_before_monitor() && !saves {
            // tf.keras made the folder whether or not a save follows; where the hook left
            // that to the writer (see `Engine::prepare_folder`), none will.
            self.engine.make_folder_left_to_writer(&name)?;
        }
        match verdict {
            Verdict::MonitorMissing => {
                log::warn!(target: "model_checkpoint", "{}", rules.monitor_missing(&monitor));
            }
            Verdict::NotImproved { best } => {
                self.say(&rules.not_improved(epoch, &monitor, best));
            }
            Verdict::Improved { .. } | Verdict::Save => {}
        }
        if !saves {
            return Ok(true);
        }
        self.engine.check_reserved(&filepath)?;
        let kind = self.decisions.kind();
        // Keras 3 meets a missing model only at the save, after its message (below).
        if model_first || ctx.model().is_ok() {
            self.engine.check_model(ctx, kind)?;
        }
        // With versions, the name is looked up before the message that shows it.
        let path = if self.engine.config.overwrite {
            name.clone()
        } else {
            check_length(&filepath)?;
            self.engine.free_path(name.clone())?
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
            Verdict::Save => self.say(&rules.saving(epoch, &shown)),
            // Keras 3 saves without a message of its own after the warning.
            Verdict::MonitorMissing | Verdict::NotImproved { .. } => {}
        }
        if !model_first {
            ctx.model()?;
        }
        // Keras 3 makes the folder only for a save that happens, after its message.
        if !rules.folder_before_monitor() {
            self.engine.prepare_folder(&name, makes_folder)?;
        }
        check_length(&filepath)?;
        // With versions, a commit never replaces: a writer that lost a race for the name
        // (one that ignored the folder's lock) fails rather than overwrite the winner's file.
        let commit = if self.engine.config.overwrite {
            Commit::Replace
        } else {
            Commit::CreateNew
        };
        self.write(path, kind, commit, (epoch, batch), logs, ctx, None)?;
        // Keras 3's second line. The save is handed over here: written already, or, in a
        // round of hooks or with background saving, planned and written by the engine.
        if let Some(line) = rules.finished_saving(epoch, &shown) {
            self.say(&line);
        }
        Ok(true)
    }

    /// Plans a due save with the engine, and writes it now unless a list of callbacks is
    /// calling this hook on every callback: then it is written once all have had the hook
    /// ([`crate::Callback::on_round_end`]), so that a full checkpoint holds every callback's state
    /// as of the end of the round, whatever the order of the list.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        path: Name,
        kind: Kind,
        commit: Commit,
        (epoch, batch): (i64, Option<i64>),
        logs: &Logs,
        ctx: &Context<'_>,
        signal: Option<&'static str>,
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
            signal,
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
        self.engine.config.storage.prepare_dir(&dir)?;
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
            Some(signal),
        )
    }
}
