//! `ckpt`: train with Keras-style checkpoints, and inspect and verify checkpoint files.

mod bench;
mod inspect;
mod train;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status: success.
const OK: u8 = 0;
/// Exit status: `verify` found a damaged or unreadable checkpoint.
const VERIFY_FAILED: u8 = 1;
/// Exit status: bad usage, bad input, or an I/O error.
const ERROR: u8 = 2;

/// Train with Keras-style checkpoints, and inspect and verify checkpoint files.
#[derive(Parser, Debug)]
#[command(
    name = "ckpt",
    version,
    about,
    after_help = "Exit status: 0 success; 1 verify found a bad checkpoint; 2 bad usage, bad input or an I/O error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(visible_alias = "t")]
    Train(train::TrainArgs),
    Show(inspect::ShowArgs),
    Verify(inspect::VerifyArgs),
    Bench(bench::BenchArgs),
}

/// Prints warnings from the library (Keras's `WARNING:tensorflow:` lines) on stderr.
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let _ = writeln!(std::io::stderr(), "WARNING: {}", record.args());
        }
    }
    fn flush(&self) {}
}

/// An error for the user: one line, and the exit status.
pub(crate) struct Failure {
    message: String,
    code: u8,
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            message: e.to_string(),
            code: ERROR,
        }
    }
}

impl Failure {
    pub(crate) fn verify(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: VERIFY_FAILED,
        }
    }
}

fn main() -> ExitCode {
    let _ = log::set_logger(&StderrLog).map(|()| log::set_max_level(log::LevelFilter::Warn));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::from(
                    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                        ERROR
                    } else {
                        OK
                    },
                );
            }
            // clap's text is several lines (usage, tips); the first says what is wrong.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("ckpt: {}", first.trim());
            return ExitCode::from(ERROR);
        }
    };
    let result = match cli.command {
        Command::Train(args) => train::run(args),
        Command::Show(args) => inspect::show(args),
        Command::Verify(args) => inspect::verify(args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::from(OK),
        Err(failure) => {
            // A closed pipe (`ckpt show f | head`) is not an error worth a message.
            if !failure.message.contains("Broken pipe") {
                eprintln!("ckpt: error: {}", failure.message);
            }
            ExitCode::from(failure.code)
        }
    }
}
