//! `ckpt`: train with Keras-style checkpoints, and inspect and verify checkpoint files.

/// `println!` that returns a closed pipe as an error instead of panicking, and prints
/// control characters (from names read out of files) escaped, so that no file can move the
/// cursor, clear the screen or fake a line of output.
macro_rules! out {
    () => {{
        use std::io::Write as _;
        writeln!(std::io::stdout()).map_err($crate::Failure::from)?
    }};
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        let line = $crate::printable(&text);
        writeln!(std::io::stdout(), "{line}").map_err($crate::Failure::from)?
    }};
}

mod bench;
mod diff;
mod folder;
mod framework;
mod inspect;
mod location;
mod report;
mod sharded;
mod train;

use std::io::Write;
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
    after_help = "Exit status: 0 success; 1 verify found a bad checkpoint (or diff found differences); 2 bad usage, bad input or an I/O error; 3 train was interrupted by SIGTERM/SIGINT after saving a resumable checkpoint."
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
    Diff(diff::DiffArgs),
    Report(report::ReportArgs),
    Bench(bench::BenchArgs),
    /// One rank of `ckpt bench --only sharded` (run by the benchmark).
    #[command(hide = true)]
    BenchRank(bench::RankArgs),
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

/// `text` with control characters escaped (`\n`, `\u{1b}` …); tabs kept.
pub(crate) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() && c != '\t' {
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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::from(OK);
            }
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                eprintln!("ckpt: a command is missing (ckpt --help lists them)");
                return ExitCode::from(ERROR);
            }
            // clap's text is several lines (usage, tips); the first says what is wrong.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("ckpt: {}", shorten(&printable(first.trim()), MAX_MESSAGE));
            return ExitCode::from(ERROR);
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
        Command::Diff(args) => diff::diff(args),
        Command::Report(args) => report::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchRank(args) => bench::rank(args),
    };
    match result {
        Ok(()) => ExitCode::from(OK),
        // A closed pipe (`ckpt ls dir | head`) ends the output early; that is not an error.
        Err(failure) if failure.message.contains("Broken pipe") => ExitCode::from(OK),
        Err(failure) => {
            if failure.message.is_empty() {
                // The command has said what happened.
            } else if failure.finding {
                eprintln!(
                    "ckpt: {}",
                    shorten(&printable(&failure.message), MAX_MESSAGE)
                );
            } else {
                eprintln!(
                    "ckpt: error: {}",
                    shorten(&printable(&failure.message), MAX_MESSAGE)
                );
            }
            ExitCode::from(failure.code)
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
