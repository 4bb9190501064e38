//! `ckpt`: train with Keras-style checkpoints, and inspect and verify checkpoint files.

/// One line on standard output, through [`output::line`]: made printable (control
/// characters from names read out of files escaped, so that no file can move the cursor,
/// clear the screen or fake a line of output), and never a panic, whatever became of
/// standard output (see [`output`] for what a failed write does to the exit status).
macro_rules! out {
    () => {
        $crate::output::line("")
    };
    ($($arg:tt)*) => {
        $crate::output::line(&format!($($arg)*))
    };
}

mod bench;
mod diff;
mod export;
mod folder;
mod framework;
mod inspect;
mod location;
mod output;
mod report;
mod sharded;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The longest message in an error line, in characters (the line stays under 600 with its
/// prefix and the note of what was left out).
const MAX_MESSAGE: usize = 540;

/// Exit status: success.
const OK: u8 = 0;
/// Exit status: `verify` found a damaged or unreadable checkpoint.
const VERIFY_FAILED: u8 = 1;
/// Exit status: bad usage, bad input, or an I/O error.
const ERROR: u8 = 2;
/// Exit status: `train` was interrupted by SIGTERM/SIGINT and saved a resumable checkpoint.
const INTERRUPTED: u8 = 3;

/// Train with Keras-style checkpoints, and inspect and verify checkpoint files.
#[derive(Parser, Debug)]
#[command(
    name = "ckpt",
    version,
    about,
    after_help = "Exit status: 0 success; 1 verify found a bad checkpoint (or diff found differences); 2 bad usage, bad input or an I/O error; 3 train was interrupted by SIGTERM/SIGINT after saving a resumable checkpoint. A failed write never turns a failure into 0: with standard output's reader gone (a closed pipe) the status is the command's verdict; any other failed write to standard output turns a success into 2."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(visible_alias = "t")]
    Train(Box<train::TrainArgs>),
    Show(inspect::ShowArgs),
    Verify(inspect::VerifyArgs),
    Ls(folder::LsArgs),
    Best(folder::BestArgs),
    Unlock(folder::UnlockArgs),
    Consolidate(sharded::ConsolidateArgs),
    Export(export::ExportArgs),
    Diff(diff::DiffArgs),
    Report(report::ReportArgs),
    Bench(bench::BenchArgs),
    /// One rank of `ckpt bench --only sharded` (run by the benchmark).
    #[command(hide = true)]
    BenchRank(bench::RankArgs),
}

/// Prints warnings from the library (Keras's `WARNING:tensorflow:` lines) on stderr, one
/// line each, made printable and bounded like error lines: a warning quotes names read from
/// files.
struct StderrLog;

/// The longest warning message, in characters.
const MAX_WARNING: usize = 2000;

impl log::Log for StderrLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            output::diagnostic("WARNING: ", &record.args().to_string(), MAX_WARNING);
        }
    }
    fn flush(&self) {}
}

/// Whether [`printable`] writes `c` as an escape: control characters but tab, the
/// characters that reorder text or break lines without being controls (bidirectional
/// overrides and isolates, the Unicode line and paragraph separators), and the two
/// non-characters XML forbids.
pub(crate) fn needs_escape(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(
            c,
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}' | '\u{fffe}' | '\u{ffff}'
        )
}

/// `text` with every character [`needs_escape`] names escaped (`\n`, `\u{1b}` …); tabs
/// kept. The one spelling of untrusted text on the terminal, in the report's page and in
/// its SVG (where XML 1.0 forbids these control characters even as references).
pub(crate) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

pub(crate) use model_checkpoint::text::shorten;

/// An error for the user: one line, and the exit status.
pub(crate) struct Failure {
    message: String,
    code: u8,
    /// A finding (a file that does not verify, tensors that differ) rather than an error.
    finding: bool,
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            message: e.to_string(),
            code: ERROR,
            finding: false,
        }
    }
}

impl Failure {
    pub(crate) fn interrupted() -> Self {
        Failure {
            message: String::new(),
            code: INTERRUPTED,
            finding: true,
        }
    }

    pub(crate) fn verify(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: VERIFY_FAILED,
            finding: true,
        }
    }
}

fn main() -> ExitCode {
    let _ = log::set_logger(&StderrLog).map(|()| log::set_max_level(log::LevelFilter::Warn));
    ExitCode::from(output::status(run()))
}

/// Runs the command line; returns the command's verdict as an exit status.
fn run() -> u8 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                output::text(&e.render().to_string());
                return OK;
            }
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                output::diagnostic(
                    "ckpt: ",
                    "a command is missing (ckpt --help lists them)",
                    MAX_MESSAGE,
                );
                return ERROR;
            }
            // clap's text is several lines (usage, tips); the first says what is wrong.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            output::diagnostic("ckpt: ", first.trim(), MAX_MESSAGE);
            return ERROR;
        }
    };
    let result = match cli.command {
        Command::Train(args) => train::run(*args),
        Command::Show(args) => inspect::show(args),
        Command::Verify(args) => inspect::verify(args),
        Command::Ls(args) => folder::ls(args),
        Command::Best(args) => folder::best(args),
        Command::Unlock(args) => folder::unlock(args),
        Command::Consolidate(args) => sharded::consolidate(args),
        Command::Export(args) => export::export(args),
        Command::Diff(args) => diff::diff(args),
        Command::Report(args) => report::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchRank(args) => bench::rank(args),
    };
    match result {
        Ok(()) => OK,
        Err(failure) => {
            if failure.message.is_empty() {
                // The command has said what happened.
            } else if failure.finding {
                output::diagnostic("ckpt: ", &failure.message, MAX_MESSAGE);
            } else {
                output::diagnostic("ckpt: error: ", &failure.message, MAX_MESSAGE);
            }
            failure.code
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, Command};

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn command_lines_parse_or_fail_as_documented() {
        let ok = [
            "ckpt train",
            "ckpt t --epochs 3 --save-freq 10 --mode max --async",
            "ckpt train --save-freq epoch --resume latest --keep-best 2 --save-last",
            "ckpt verify a.safetensors b/",
            "ckpt ls ck --json",
            "ckpt best ck --monitor val_loss --mode min",
            "ckpt diff a b --changed-only",
            "ckpt bench --only save-vs-raw --runs 3",
        ];
        for line in ok {
            assert!(Cli::try_parse_from(line.split(' ')).is_ok(), "{line}");
        }
        let bad = [
            "ckpt train --save-freq banana",
            "ckpt train --mode maxx",
            "ckpt train --epochs 0",
            "ckpt train --progress 3",
            "ckpt verify",
            "ckpt best",
            "ckpt bench --only nothing",
        ];
        for line in bad {
            assert!(Cli::try_parse_from(line.split(' ')).is_err(), "{line}");
        }
        match Cli::try_parse_from(["ckpt", "train", "--resume", "latest"]).map(|c| c.command) {
            Ok(Command::Train(_)) => {}
            other => panic!("{other:?}"),
        }
    }
}
