//! Keras-style console output: `Epoch 3/10`, a progress bar on a terminal (verbose 1), and a
//! summary line per epoch.

use std::io::Write;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use model_checkpoint::Logs;

pub(crate) struct Progress {
    verbose: u8,
    epochs: usize,
    steps: usize,
    bar: Option<ProgressBar>,
    started: Instant,
}

fn metrics_text(logs: &Logs) -> String {
    logs.iter()
        .filter_map(|(k, v)| v.as_f64().map(|x| format!(" - {k}: {x:.4}")))
        .collect()
}

fn per_step(elapsed: Duration, steps: usize) -> String {
    let per = elapsed.as_secs_f64() / steps.max(1) as f64;
    if per >= 1.0 {
        format!("{per:.0}s/step")
    } else if per >= 1e-3 {
        format!("{:.0}ms/step", per * 1e3)
    } else {
        format!("{:.0}us/step", per * 1e6)
    }
}

impl Progress {
    pub(crate) fn new(verbose: u8, epochs: usize, steps: usize) -> Self {
        Progress {
            verbose,
            epochs,
            steps,
            bar: None,
            started: Instant::now(),
        }
    }

    pub(crate) fn epoch_begin(&mut self, epoch: usize, first_step: usize) {
        self.started = Instant::now();
        if self.verbose == 0 {
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "Epoch {}/{}", epoch + 1, self.epochs);
        if self.verbose == 1 {
            let bar = ProgressBar::with_draw_target(
                Some(self.steps as u64),
                ProgressDrawTarget::stdout(),
            );
            if let Ok(style) =
                ProgressStyle::with_template("{pos}/{len} [{bar:30.=>-}] - {elapsed} {msg}")
            {
                bar.set_style(style.progress_chars("=>."));
            }
            bar.set_position(first_step as u64);
            self.bar = Some(bar);
        }
    }

    pub(crate) fn batch_end(&self, step: usize, logs: &Logs) {
        if let Some(bar) = &self.bar {
            bar.set_position(step as u64);
            bar.set_message(metrics_text(logs).trim_start_matches(" - ").to_owned());
        }
    }

    /// The epoch's summary line; printed before the callbacks' `on_epoch_end`, as Keras's
    /// progress bar (the first callback) prints before the others.
    pub(crate) fn epoch_end(&mut self, logs: &Logs) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let elapsed = self.started.elapsed();
        let secs = elapsed.as_secs();
        let line = match self.verbose {
            0 => return,
            1 => format!(
                "{0}/{0} [==============================] - {secs}s {1}{2}",
                self.steps,
                per_step(elapsed, self.steps),
                metrics_text(logs)
            ),
            _ => format!(
                "{}/{} - {secs}s{} - {:.0}ms/epoch - {}",
                self.steps,
                self.steps,
                metrics_text(logs),
                elapsed.as_secs_f64() * 1e3,
                per_step(elapsed, self.steps)
            ),
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }
}
