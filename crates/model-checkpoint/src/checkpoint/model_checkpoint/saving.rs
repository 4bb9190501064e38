//! How a due save runs: Keras's `_save_model` order of effects, joining Keras's decisions
//! (`Decisions`) to the saving engine (`Engine`), and the save on a signal.

use std::io::Write;
use std::path::PathBuf;

use super::super::decisions::Decisions;
use super::super::engine::Job;
use super::super::messages;
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

/// A save that is due: where, what, how it commits, and at which point of training.
struct Due<'a> {
    path: &'a std::path::Path,
    kind: Kind,
    commit: Commit,
    epoch: i64,
    batch: Option<i64>,
}

impl ModelCheckpoint {
    pub(super) fn say(&mut self, message: &str) {
        // In a multi-process run every rank decides alike; rank 0 speaks for all.
        if self.verbose <= 0 || self.engine.ranks.is_some_and(|r| r.rank != 0) {
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
        let filepath = Decisions::file_path(&self.engine.template, epoch, batch, logs)?;
        self.engine.check_path(&filepath)?;
        // Keras fails on a missing model here: after formatting, before making folders.
        ctx.model()?;
        self.engine.ensure_run_id();
        // tf.keras creates the folder before looking at the monitor, so skipped epochs can
        // leave empty folders (trace missing_monitor_dir_created).
        self.engine.prepare_folder(&PathBuf::from(&filepath))?;
        let path = self.engine.free_path(PathBuf::from(&filepath))?;
        let shown = if self.engine.overwrite {
            filepath
        } else {
            path.display().to_string()
        };
        let monitor = self.decisions.monitor.clone();
        match self.decisions.judge(logs) {
            Verdict::MonitorMissing => {
                log::warn!(target: "model_checkpoint", "{}", messages::monitor_missing(&monitor));
                return Ok(true);
            }
            Verdict::NotImproved { best } => {
                self.say(&messages::not_improved(epoch, &monitor, best));
                return Ok(true);
            }
            Verdict::Improved { from, to } => {
                self.say(&messages::improved(epoch, &monitor, from, to, &shown));
            }
            Verdict::Save => self.say(&messages::saving(epoch, &shown)),
        }
        // With versions, a commit never replaces: a writer that lost a race for the name
        // (one that ignored the folder's lock) fails rather than overwrite the winner's file.
        let commit = if self.engine.overwrite {
            Commit::Replace
        } else {
            Commit::CreateNew
        };
        let kind = self.decisions.kind();
        self.write(
            Due {
                path: &path,
                kind,
                commit,
                epoch,
                batch,
            },
            logs,
            ctx,
        )?;
        Ok(true)
    }

    /// Hands a due save to the engine, with this callback's state for full checkpoints.
    fn write(&mut self, due: Due<'_>, logs: &Logs, ctx: &Context<'_>) -> Result<(), Error> {
        let Due {
            path,
            kind,
            commit,
            epoch,
            batch,
        } = due;
        let key = self.key();
        let ModelCheckpoint {
            decisions,
            engine,
            triggers,
            ..
        } = self;
        let job = Job {
            path,
            kind,
            epoch,
            batch,
            logs,
            monitor: &decisions.monitor,
            direction: decisions.direction,
            commit,
        };
        let state_of = |saved| serde_json::to_value(compose(decisions, triggers, saved)).ok();
        engine.save(job, ctx, &key, &state_of)
    }

    /// Saves a full checkpoint because a signal asked training to stop, and waits until it
    /// is durable (beyond Keras).
    pub(super) fn save_interrupted(
        &mut self,
        signal: &'static str,
        epoch: i64,
        batch: Option<i64>,
        logs: &Logs,
        ctx: &Context<'_>,
    ) -> Result<(), Error> {
        self.engine.flush()?;
        ctx.model()?;
        let dir = self.engine.folder();
        self.engine.storage.prepare_dir(&dir.to_string_lossy())?;
        self.engine.ensure_lock()?;
        let path = match self.engine.last_path() {
            Some(last) => {
                self.engine.check_replaceable(&last)?;
                last
            }
            // The shared name only if it is free or this run's; never another run's (or a
            // user's) file.
            None => {
                let shared = dir.join("interrupted.safetensors");
                if self.engine.replaceable(&shared) {
                    shared
                } else {
                    dir.join(format!("interrupted-{}.safetensors", self.engine.run_id()))
                }
            }
        };
        self.say(&format!(
            "\nEpoch {}: {signal} received, saving a full checkpoint to {}",
            epoch + 1,
            path.display()
        ));
        let background = std::mem::replace(&mut self.engine.background, false);
        // The `last` path or the run's own interrupt file, which `replaceable` allowed.
        let due = Due {
            path: &path,
            kind: Kind::Full,
            commit: Commit::Replace,
            epoch,
            batch,
        };
        let written = self.write(due, logs, ctx);
        self.engine.background = background;
        written?;
        self.triggers.interrupted = Some(signal);
        Ok(())
    }
}
